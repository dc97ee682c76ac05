"""TTL: test-time learning on unlabeled support inputs by minimising their perplexity.

Each step takes ``batch_size`` inputs, computes per-sample log-perplexity under the current
adapter, weights it with S(x) = scale * exp(log PPL(x) - log P0) (zero when PPL <= P0, so
already-familiar inputs are skipped), and takes one AdamW step on the LoRA weights only. The
loss is S(x) * log PPL(x) (TLM's form); DeGAML's Eq. 12 writes S(x) * PPL(x), available as
``TTLConfig(objective="ppl")`` (see ``TTLConfig`` for why the default differs).
"""

from __future__ import annotations

import math
import random

import torch

from ..backend.scoring import input_nll
from .context import StrategyContext, StrategyOutcome
from .schema import TTLStrategy


def selection_weights(log_ppl: torch.Tensor, scale: float, threshold: float) -> torch.Tensor:
    """S(x) from per-sample log-perplexities (no gradient flows through the weights)."""
    log_p0 = math.log(threshold)
    weights = scale * torch.exp(log_ppl.detach() - log_p0)
    return torch.where(log_ppl.detach() > log_p0, weights, torch.zeros_like(weights))


def run(strategy: TTLStrategy, ctx: StrategyContext, examples) -> StrategyOutcome:
    texts = ctx.prompt_texts(ctx.support)
    if not texts:
        raise ValueError(f"task {ctx.task!r} has no support inputs for test-time learning")
    params = ctx.layout.parameters()
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=strategy.learning_rate, weight_decay=0.0)
    rng = random.Random(ctx.seed)
    order: list[int] = []
    losses, skipped = [], 0
    ctx.model.train()
    try:
        for _ in range(strategy.ttl_steps):
            batch = []
            while len(batch) < min(strategy.batch_size, len(texts)):
                if not order:
                    order = list(range(len(texts)))
                    if strategy.shuffle_data:
                        rng.shuffle(order)
                batch.append(texts[order.pop(0)])
            nll = input_nll(ctx.model, ctx.tokenizer, batch, batch_size=len(batch), max_len=ctx.ttl.max_len, grad=True)
            weights = selection_weights(nll, ctx.ttl.scale, ctx.ttl.ppl_threshold)
            if not bool(weights.any()):
                skipped += 1  # every input already under P0: nothing to learn from
                continue
            per_sample = nll if ctx.ttl.objective == "log_ppl" else nll.exp()  # S*logPPL or Eq. 12's S*PPL
            loss = (weights * per_sample).sum() / len(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        ctx.model.eval()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    adapted = ctx.layout.get_flat()
    result = ctx.evaluate(examples)
    cost = {
        "evaluations": 1,
        "ttl_steps": strategy.ttl_steps,
        "skipped_steps": skipped,
        "ttl_loss_first": losses[0] if losses else None,
        "ttl_loss_last": losses[-1] if losses else None,
    }
    return StrategyOutcome(result, adapted, cost)
