"""TRL's fused LM head, scoring only the completion positions on every device.

TRL (1.16) computes an SFT or GRPO loss through a fused LM head that projects hidden states onto
the vocabulary in tiles. On Triton devices it projects only the positions whose label is not
-100; elsewhere it projects every position (so that compilers such as Neuron's see fixed tile
shapes) and masks the result. On a CPU the policy prompt is ~900 tokens and the completion ~30,
so that projects 30x more positions than the loss reads, through Qwen's 152k-word head, forward
and backward: 27 of the 50 s of one ReST^EM SFT step here (``benchmarks/demo_profile.md``).

``completion_positions_only()`` makes TRL take its own compact branch on every device for the
duration of a ``train()`` call. The loss is the same: the compact branch scores the same
positions and scatters them back (``tests/test_restem.py`` compares the two).
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def completion_positions_only():
    """Within the block, TRL's fused LM head projects only labelled positions (see module doc)."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if not callable(original):  # another TRL version: leave it as it is
        yield
        return
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = original


__all__ = ["completion_positions_only"]
