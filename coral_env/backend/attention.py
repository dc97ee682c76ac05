"""Attention for packed scoring rows on CPU.

Packed rows carry a (B, 1, L, L) boolean block mask (packing.py). PyTorch's CPU flash-attention
kernel runs such short masked rows at a fraction of the matmul rate: on SmolLM2-135M it was a
quarter of the whole scoring pass (benchmarks/eval.md). Two batched matmuls do the same work
about twice as fast at these sizes: query heads that share a key/value head are folded into one
matrix (no ``repeat_kv`` copy), scores and softmax are fp32 like the flash kernel's, and the
probabilities go back to the model dtype for the product with the values.

``packed_attention(model)`` switches a model to it for the duration of a ``with`` block; calls
without a boolean 4D mask, with gradients, or with a sliding window fall back to SDPA.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

NAME = "coral_packed"


def packed_attention_forward(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
):
    """Attention interface of transformers: (B, H, L, D) inputs -> ((B, L, H, D), None)."""
    if (
        attention_mask is None
        or attention_mask.dtype != torch.bool
        or attention_mask.dim() != 4
        or attention_mask.shape[1] != 1
        or torch.is_grad_enabled()
        or kwargs.get("sliding_window") is not None
        or query.shape[2] != key.shape[2]
    ):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    rep = heads // kv_heads
    if scaling is None:
        scaling = dim**-0.5
    # Heads h*rep..h*rep+rep-1 use key/value head h (transformers' repeat_kv order).
    q = query.reshape(batch, kv_heads, rep * length, dim).float()
    scores = torch.matmul(q, key.float().transpose(-1, -2))  # (B, KV, rep*L, L) fp32
    scores = scores.view(batch, kv_heads, rep, length, length).mul_(scaling)
    scores.masked_fill_(~attention_mask.view(batch, 1, 1, length, length), float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(value.dtype).view(batch, kv_heads, rep * length, length)
    out = torch.matmul(probs, value).view(batch, heads, length, dim)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_attention_forward)


@contextmanager
def packed_attention(model):
    """Use ``packed_attention_forward`` in ``model`` inside the block (CPU SDPA models only)."""
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    device = next(model.parameters()).device
    if config is None or current != "sdpa" or device.type != "cpu":
        yield
        return
    _register()
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = current
