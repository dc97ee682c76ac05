"""Supervised LoRA fine-tuning on answer tokens: sequences, padded batches, AdamW steps.

Used by checkpoint collection (``coral_env.setup.collect``) and by baselines that train a LoRA
on a task's data. The pieces are small and stateless so a caller can persist and resume them:

* ``build_sequences``: (prompt, answer) pairs from ``Example``s, tokenised the lm-eval way
  (``encode_pairs``), labels ``-100`` on prompt tokens so only answer tokens carry loss;
* ``batch_indices``: batch ``t`` of a seeded stream of permutations, a pure function of
  (seed, step), so a resumed run sees exactly the batches an uninterrupted one would;
* ``collate``: right-padded tensors;
* ``train_step``: one AdamW step over the LoRA parameters; the output layer runs only at
  answer positions (the 49k-vocabulary head is the costly part of a small model's step);
* ``adamw_state`` / ``load_adamw_state``: the optimizer's moments as flat tensors, for
  atomic checkpoints.

>>> batch_indices(5, 3, step=1, seed=0) == batch_indices(5, 3, step=1, seed=0)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..tasks import Example, build_generation_prompt, build_requests
from .scoring import decoder_and_head, encode_pairs

IGNORE = -100


@dataclass(frozen=True)
class TrainSequence:
    """One tokenised training sequence: prompt tokens then answer tokens.

    ``labels`` equals ``input_ids`` on answer tokens and ``IGNORE`` (-100) on prompt tokens.
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def n_answer_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def example_pair(example: Example, style: str = "plain", tokenizer=None) -> tuple[str, str]:
    """(prompt, answer) text of one example.

    Multiple choice: the gold choice's context and continuation (lm-eval format, continuation
    with its leading space). Generative: the decoding prompt and ``" " + answer`` (plain style)
    or the bare answer (chat style). Examples carry no rationale, so GSM8K trains on the final
    answer only.
    """
    if example.is_multiple_choice:
        if not 0 <= example.label < len(example.continuations):
            raise ValueError(f"example {example.uid!r} has no valid gold label ({example.label})")
        return build_requests(example, style, tokenizer)[example.label]
    if not example.answer:
        raise ValueError(f"generative example {example.uid!r} has no gold answer to train on")
    prompt = build_generation_prompt(example, style, tokenizer)
    return prompt, (" " + example.answer if style == "plain" else example.answer)


def build_sequences(
    examples: Sequence[Example], tokenizer, *, style: str = "plain", max_len: int = 128
) -> list[TrainSequence]:
    """Tokenise examples into training sequences of at most ``max_len`` tokens.

    The answer is kept whole (cut to ``max_len - 1`` tokens if it alone is longer); the prompt
    is cut from the left, like the evaluator does, so the tokens next to the answer survive.
    """
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    pairs = [example_pair(ex, style, tokenizer) for ex in examples]
    out = []
    for ctx, ans in encode_pairs(tokenizer, pairs):
        ans = ans[: max_len - 1]
        ctx = ctx[-(max_len - len(ans)) :]
        out.append(TrainSequence(tuple(ctx + ans), tuple([IGNORE] * len(ctx) + ans)))
    return out


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of batch ``step`` (0-based) in an endless stream of seeded permutations of ``n``.

    Epoch ``e`` is ``randperm(n)`` under a generator seeded from (seed, e); batch ``t`` is
    positions ``[t*batch_size, (t+1)*batch_size)`` of the concatenated epochs. A pure function of
    its arguments: the data order of a resumed run is the uninterrupted run's.
    """
    if n < 1 or batch_size < 1 or step < 0:
        raise ValueError(f"need n >= 1, batch_size >= 1, step >= 0 (got {n}, {batch_size}, {step})")
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
        perm = torch.randperm(n, generator=gen)
        take = min(batch_size - len(out), n - offset)
        out.extend(perm[offset : offset + take].tolist())
        pos += take
    return out


def collate(sequences: Sequence[TrainSequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (B, T) of a batch."""
    width = max(len(s.input_ids) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s.input_ids)] = torch.tensor(s.input_ids)
        labels[i, : len(s.labels)] = torch.tensor(s.labels)
        mask[i, : len(s.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the batch's answer tokens (a scalar with grad).

    The output layer and log-softmax run only at positions that predict an answer token.
    """
    decoder, head = decoder_and_head(model)
    device = head.weight.device
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = batch["labels"][:, 1:].to(device)
    rows, cols = (targets != IGNORE).nonzero(as_tuple=True)
    if rows.numel() == 0:
        raise ValueError("batch has no answer tokens")
    logits = head(hidden[rows, cols]).float()
    return torch.nn.functional.cross_entropy(logits, targets[rows, cols])


def trainable_parameters(model) -> list[torch.Tensor]:
    """Parameters with ``requires_grad`` (for a PEFT LoRA model: the LoRA weights), in order."""
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(
    params: Sequence[torch.Tensor],
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over ``params`` only (the base model stays frozen); single-tensor updates so a
    resumed optimizer computes bit-identical steps."""
    if not params:
        raise ValueError("no trainable parameters; attach a LoRA first")
    return torch.optim.AdamW(list(params), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=False)


def train_step(
    model,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    lr: float | None = None,
    max_grad_norm: float | None = None,
) -> float:
    """One optimizer step on the answer-token loss of ``batch``; returns the loss before the step.

    ``lr`` (if given) is written into every parameter group first (phase schedules).
    """
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = answer_loss(model, batch)
        loss.backward()
    if max_grad_norm is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def adamw_state(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """AdamW moments of ``params`` as flat fp32 tensors (``exp_avg``, ``exp_avg_sq``) + ``step``.

    Before the first step the moments are zeros and ``step`` is 0.
    """
    avg, sq, step = [], [], 0.0
    for p in params:
        state = optimizer.state.get(p, {})
        avg.append(state["exp_avg"].reshape(-1).float() if state else torch.zeros(p.numel()))
        sq.append(state["exp_avg_sq"].reshape(-1).float() if state else torch.zeros(p.numel()))
        step = float(state["step"]) if state else step
    return {"exp_avg": torch.cat(avg), "exp_avg_sq": torch.cat(sq), "step": torch.tensor([step], dtype=torch.float32)}


def load_adamw_state(
    optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], tensors: dict[str, torch.Tensor]
) -> None:
    """Inverse of ``adamw_state``: restore the moments of ``params`` in place."""
    step = float(tensors["step"].reshape(-1)[0])
    if step == 0:
        optimizer.state.clear()
        return
    offset = 0
    for p in params:
        n = p.numel()
        optimizer.state[p] = {
            "step": torch.tensor(step, dtype=torch.float32),
            "exp_avg": tensors["exp_avg"][offset : offset + n].view(p.shape).to(p.dtype).clone(),
            "exp_avg_sq": tensors["exp_avg_sq"][offset : offset + n].view(p.shape).to(p.dtype).clone(),
        }
        offset += n
    if offset != tensors["exp_avg"].numel():
        raise ValueError(f"optimizer state holds {tensors['exp_avg'].numel()} entries, parameters need {offset}")


def train_lora(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    steps: int,
    lr: float,
    batch_size: int = 8,
    max_len: int = 128,
    seed: int = 0,
    style: str = "plain",
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    progress: bool = False,
) -> list[float]:
    """Fine-tune the LoRA of ``model`` in place for ``steps`` steps; returns the per-step losses.

    A convenience loop for baselines (no checkpoints, no resume); ``setup.collect`` builds the
    resumable version from the same pieces.
    """
    from tqdm.auto import tqdm

    sequences = build_sequences(examples, tokenizer, style=style, max_len=max_len)
    optimizer = make_optimizer(trainable_parameters(model), lr, weight_decay)
    losses = []
    for step in tqdm(range(steps), desc="finetune", disable=not progress, leave=False):
        idx = batch_indices(len(sequences), batch_size, step, seed)
        batch = collate([sequences[i] for i in idx], tokenizer.pad_token_id)
        losses.append(train_step(model, batch, optimizer, max_grad_norm=max_grad_norm))
    return losses


__all__ = [
    "IGNORE",
    "TrainSequence",
    "example_pair",
    "build_sequences",
    "batch_indices",
    "collate",
    "answer_loss",
    "trainable_parameters",
    "make_optimizer",
    "train_step",
    "adamw_state",
    "load_adamw_state",
    "train_lora",
]
