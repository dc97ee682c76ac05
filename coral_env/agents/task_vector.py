"""Task vectors: how an adapter moves the model's last-layer representation of a task's prompts.

    v_T = mean_h(model + adapter, prompts) - mean_h(model, prompts)      (CORAL section 2.3)

``mean_h`` is the final hidden state (the decoder's output, after its final norm: what the
output layer reads) averaged over each prompt's real tokens (padding masked), then over the
prompts, so every prompt weighs the same whatever its length. Prompts are cut from the left to
``max_len`` tokens (the end of a prompt, next to the answer, is kept), sorted by length and run
in batches without gradients.

For a training task the adapter is a collected checkpoint; for an unseen task it is the
generated adapter (no labels needed). The "without" pass disables the adapter (PEFT's
``disable_adapter``, or an all-zero adapter on models without it), so a zero adapter gives
exactly v_T = 0. The model's adapter weights are restored bit for bit afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Sequence

import torch

from ..backend.lora import AdapterLayout
from ..backend.scoring import decoder_and_head


def encode_prompts(tokenizer, prompts: Sequence[str], max_len: int) -> list[list[int]]:
    """Token ids of each prompt, no special tokens, cut from the left to ``max_len``."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not prompts:
        raise ValueError("need at least one prompt to compute a task vector")
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    out = []
    for row in ids:
        row = list(row)[-max_len:] or [tokenizer.eos_token_id]
        out.append(row)
    return out


@torch.no_grad()
def mean_hidden(model, encoded: list[list[int]], pad_id: int, batch_size: int = 8) -> torch.Tensor:
    """Mean final hidden state (H,) fp32 of ``model`` as it is now, over prompts and their tokens.

    Args:
        encoded: token ids per prompt (``encode_prompts``).
        pad_id: id written at padded positions (they are masked out of the mean).
    """
    decoder, _ = decoder_and_head(model)
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    total = None
    for start in range(0, len(order), batch_size):
        rows = [encoded[i] for i in order[start : start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)], mask[j, : len(r)] = torch.tensor(r), 1
        hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        m = mask.to(device, torch.float32)[..., None]
        per_prompt = (hidden.float() * m).sum(1) / m.sum(1)  # (b, H)
        part = per_prompt.sum(0)
        total = part if total is None else total + part
    return (total / len(encoded)).cpu()


@contextlib.contextmanager
def adapter_applied(layout: AdapterLayout, vector: torch.Tensor | None):
    """Temporarily write ``vector`` into the bound model (``None``: keep it); restores exactly."""
    saved = layout.get_flat()
    try:
        if vector is not None:
            layout.set_flat(vector.detach().to(torch.float32))
        yield
    finally:
        layout.set_flat(saved)


@contextlib.contextmanager
def adapter_disabled(model, layout: AdapterLayout):
    """The model without its adapter: PEFT's ``disable_adapter`` when available, else zeros."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield
    else:
        with adapter_applied(layout, torch.zeros(layout.size)):
            yield


class TaskVectorizer:
    """Computes task vectors for one LoRA-wrapped model; caches each prompt set's base mean.

    Args:
        model: a PEFT (LoRA-wrapped) causal LM.
        tokenizer: its tokenizer.
        layout: the ``AdapterLayout`` bound to ``model``.
        max_len: tokens kept per prompt (from the end).
        batch_size: prompts per forward pass.

    >>> tv = TaskVectorizer(peft_model, tok, layout)          # doctest: +SKIP
    >>> tv(adapter, prompts).shape                             # doctest: +SKIP
    torch.Size([576])
    """

    def __init__(self, model, tokenizer, layout: AdapterLayout, *, max_len: int = 128, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer, self.layout = model, tokenizer, layout
        self.max_len, self.batch_size = max_len, batch_size
        self._base: dict[str, torch.Tensor] = {}

    @property
    def dim(self) -> int:
        """H, the hidden size (length of a task vector)."""
        _, head = decoder_and_head(self.model)
        return int(head.weight.shape[1])

    def _encode(self, prompts: Sequence[str]) -> tuple[str, list[list[int]]]:
        encoded = encode_prompts(self.tokenizer, prompts, self.max_len)
        key = hashlib.sha1(repr(encoded).encode()).hexdigest()
        return key, encoded

    def _mean(self, encoded: list[list[int]]) -> torch.Tensor:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return mean_hidden(self.model, encoded, pad, self.batch_size)

    def base_mean(self, prompts: Sequence[str]) -> torch.Tensor:
        """Mean final hidden state (H,) of the model without its adapter (cached per prompt set)."""
        key, encoded = self._encode(prompts)
        if key not in self._base:
            with adapter_disabled(self.model, self.layout):
                self._base[key] = self._mean(encoded)
        return self._base[key]

    def __call__(self, adapter: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Task vector (H,) fp32 of flat ``adapter`` (size,) on ``prompts``."""
        return self.many(adapter[None], prompts)[0]

    def many(self, adapters: torch.Tensor, prompts: Sequence[str], progress: bool = False) -> torch.Tensor:
        """Task vectors (n, H) of n flat adapters (n, size) on the same prompts."""
        if adapters.ndim != 2 or adapters.shape[1] != self.layout.size:
            raise ValueError(f"adapters have shape {tuple(adapters.shape)}, expected (n, {self.layout.size})")
        from tqdm.auto import tqdm

        base = self.base_mean(prompts)
        _, encoded = self._encode(prompts)
        out = torch.empty(adapters.shape[0], base.shape[0])
        with adapter_applied(self.layout, None):  # restores the model's own adapter at the end
            for i in tqdm(range(adapters.shape[0]), desc="task vectors", disable=not progress, leave=False):
                self.layout.set_flat(adapters[i].detach().to(torch.float32))
                out[i] = self._mean(encoded) - base
        return out


def task_vector(
    model,
    tokenizer,
    layout: AdapterLayout,
    adapter: torch.Tensor,
    prompts: Sequence[str],
    *,
    max_len: int = 128,
    batch_size: int = 8,
) -> torch.Tensor:
    """One task vector (H,): ``adapter``'s shift of the mean final hidden state on ``prompts``."""
    return TaskVectorizer(model, tokenizer, layout, max_len=max_len, batch_size=batch_size)(adapter, prompts)


__all__ = ["TaskVectorizer", "adapter_applied", "adapter_disabled", "encode_prompts", "mean_hidden", "task_vector"]
