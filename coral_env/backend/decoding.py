"""Greedy decoding for generative evaluation, continuously batched over a shared KV cache.

``model.generate`` keeps every row of a batch until its last row stops, so one long answer holds
``batch_size - 1`` finished rows for up to ``max_new_tokens`` steps, and on a CPU a decoding step
costs about the same at 1 row as at 8 (it reads every weight once). Here a row leaves the cache
as soon as it reaches EOS, a stop string or its token limit, and the next prompt (longest first)
is prefilled into its slot, so every step decodes ``batch_size`` rows while prompts remain.
Each row keeps its own positions and is left-padded to the cache's length under the attention
mask, so its text does not depend on its neighbours, up to rounding: in bf16 a near-tie can
break the other way, as it does between batch sizes in ``model.generate``.
"""

from __future__ import annotations

import torch

from .scoring import decoder_and_head

ENCODING = dict(return_tensors="pt", padding=True, add_special_tokens=False)


@torch.no_grad()
def generate_greedy(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 256,
    stop: tuple[str, ...] = (),
    batch_size: int = 8,
    progress: bool = False,
    head_delta: torch.Tensor | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (no special tokens added), cut at the first stop string.

    ``batch_size`` rows decode at once. ``head_delta`` (n_prompts, hidden): a per-prompt vector
    added to the final hidden state before the output layer at every decoding step (SLOT),
    applied to the logits in fp32.
    """
    from tqdm.auto import tqdm

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
    head = decoder_and_head(model)[1]
    device = head.weight.device
    queue = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))[::-1]  # pop() takes the longest
    eos = _eos_ids(model, tokenizer)
    tokens: dict[int, list[int]] = {}
    results: list[str] = [""] * len(prompts)
    batch = _Batch(model)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with tqdm(total=len(prompts), desc="generating", disable=not progress, leave=False) as bar:
            while queue or batch.rows:
                if queue and len(batch.rows) < batch_size:
                    new = [queue.pop() for _ in range(min(batch_size - len(batch.rows), len(queue)))]
                    batch.admit(new, tokenizer([prompts[i] for i in new], **ENCODING).to(device), head, head_delta)
                    tokens.update({i: [] for i in new})
                elif not batch.fresh.any():  # every row has its next token: one step for all of them
                    batch.step()
                finished = set()
                for row, token in batch.choose():
                    tokens[row].append(token)
                    done = token in eos or len(tokens[row]) == max_new_tokens
                    text = tokenizer.decode(tokens[row], skip_special_tokens=True) if stop or done else ""
                    if done or (stop and _has_stop(text, stop)):
                        results[row] = cut_at_stop(text, stop)
                        finished.add(row)
                        bar.update(1)
                batch.keep([j for j, row in enumerate(batch.rows) if row not in finished])
    finally:
        tokenizer.padding_side = side
    return results


class _Batch:
    """The rows being decoded: their KV cache (left-padded to one length), attention mask and next
    positions, each row's last chosen token, and, for rows whose logits are ``fresh`` (not yet
    used to choose a token), the logits of their next token; SLOT offsets if any."""

    def __init__(self, model) -> None:
        self.model = model
        self.rows: list[int] = []
        self.cache = self.mask = self.positions = self.last = self.logits = self.offsets = None
        self.fresh = torch.zeros(0, dtype=torch.bool)

    def admit(self, rows: list[int], enc, head, head_delta: torch.Tensor | None) -> None:
        """Prefill ``rows`` (prompt indices, encoded as ``enc``) and append them to the batch."""
        from transformers import DynamicCache

        offsets = None
        if head_delta is not None:  # SLOT: the per-prompt vector through the output layer, in fp32
            offsets = head_delta[rows].to(head.weight.device).float() @ head.weight.float().T
        mask = enc["attention_mask"]
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=enc["input_ids"],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits, positions, last = out.logits[:, -1].float(), positions[:, -1:] + 1, enc["input_ids"][:, -1]
        fresh = torch.ones(len(rows), dtype=torch.bool)
        if self.cache is None:
            self.cache, self.mask, self.positions, self.last, self.logits = cache, mask, positions, last, logits
            self.offsets, self.fresh = offsets, fresh
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            for mine, theirs in zip(self.cache.layers, cache.layers):
                mine.keys = torch.cat([_left_pad(mine.keys, width, 2), _left_pad(theirs.keys, width, 2)])
                mine.values = torch.cat([_left_pad(mine.values, width, 2), _left_pad(theirs.values, width, 2)])
            self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
            self.positions = torch.cat([self.positions, positions])
            self.last, self.logits = torch.cat([self.last, last]), torch.cat([self.logits, logits])
            self.fresh = torch.cat([self.fresh, fresh])
            if offsets is not None:
                self.offsets = torch.cat([self.offsets, offsets])
        self.rows += rows

    def choose(self) -> list[tuple[int, int]]:
        """The greedy token of each row with fresh logits, as (prompt index, token)."""
        at = self.fresh.nonzero()[:, 0]
        logits = self.logits[at]
        if self.offsets is not None:
            logits = logits + self.offsets[at, : logits.shape[-1]]
        self.last[at] = logits.argmax(-1)
        self.fresh[:] = False
        return [(self.rows[j], t) for j, t in zip(at.tolist(), self.last[at].tolist())]

    def keep(self, keep: list[int]) -> None:
        """Drop every row not in ``keep`` (batch indices), and the cache columns no row uses."""
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.__init__(self.model)
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]
        self.logits, self.fresh = self.logits[index], self.fresh[index.cpu()]
        if self.offsets is not None:
            self.offsets = self.offsets[index]
        self.rows = [self.rows[j] for j in keep]
        first = int(self.mask.any(0).long().argmax())  # columns left of every row's start are padding
        if first:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def step(self) -> None:
        """Feed every row's last token through the model: the logits of each row's next token."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        out = self.model(
            input_ids=self.last[:, None],
            attention_mask=self.mask,
            position_ids=self.positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.logits, self.positions = out.logits[:, -1].float(), self.positions + 1
        self.fresh = torch.ones(len(self.rows), dtype=torch.bool)


def _left_pad(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    pad = width - x.shape[dim]
    if not pad:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if value is not None:
            ids.update(value if isinstance(value, (list, tuple)) else [value])
    return ids


def _has_stop(text: str, stop: tuple[str, ...]) -> bool:
    return any(s in text for s in stop)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = len(text)
    for s in stop:
        at = text.find(s)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]
