"""LORA: two-subspace mixing, Delta W = B . M(lambda) . A, no training.

M(lambda) = (1 - lambda) I_r + lambda [[I, I], [I, I]] with the rank split in halves, i.e.
M = I + lambda [[0, I], [I, 0]]. lambda = 0 leaves the adapter unchanged.
"""

from __future__ import annotations

import torch

from .context import StrategyContext, StrategyOutcome
from .schema import LoRAStrategy


def mixer(rank: int, lam: float) -> torch.Tensor:
    """The r x r mixing matrix M(lambda)."""
    if rank % 2:
        raise ValueError(f"two-subspace mixing needs an even LoRA rank, got {rank}")
    half = rank // 2
    swap = torch.zeros(rank, rank)
    swap[:half, half:] = torch.eye(half)
    swap[half:, :half] = torch.eye(half)
    return torch.eye(rank) + lam * swap


def mix_adapter(layout, vector: torch.Tensor, lam: float) -> torch.Tensor:
    """A new flat adapter whose every A becomes M(lambda) @ A (so B M A is the mixed update)."""
    state = layout.to_state_dict(vector)
    for name, tensor in state.items():
        if "lora_A" in name:
            state[name] = mixer(tensor.shape[0], lam).to(tensor.dtype) @ tensor
    return layout.from_state_dict(state)


def run(strategy: LoRAStrategy, ctx: StrategyContext, examples) -> StrategyOutcome:
    mixed = mix_adapter(ctx.layout, ctx.layout.get_flat(), strategy.lambda_)
    ctx.layout.set_flat(mixed)
    result = ctx.evaluate(examples)
    return StrategyOutcome(result, mixed, {"evaluations": 1})
