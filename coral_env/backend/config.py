"""The model-backend part of a scale preset (SPEC section 6): which model, which LoRA, which dtype."""

from __future__ import annotations

from dataclasses import dataclass, field

from .lora import LoraSpec
from .scoring import ScoringConfig

PRESETS = ("tiny", "cpu", "paper")


def check_preset(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return name


@dataclass
class BackendConfig:
    """Model, LoRA layout and evaluation shape for one preset.

    Attributes:
        model: ``tiny``, an offline package name, a ``.gguf`` file, a folder or a Hub id.
        dtype: ``auto`` picks bf16 where the hardware supports it.
        lora: rank, alpha and target modules of the adapter every stage shares.
        token_dim: chunk size of one generator token (AdapterLayout).
        prompt_style: ``plain`` (lm-eval format) or ``chat`` (the model's chat template).
    """

    model: str = "smollm2-135m-instruct"
    dtype: str = "auto"
    device: str = "cpu"
    lora: LoraSpec = field(default_factory=LoraSpec)
    token_dim: int = 256
    prompt_style: str = "plain"
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    @classmethod
    def preset(cls, name: str, **overrides) -> "BackendConfig":
        check_preset(name)
        if name == "tiny":
            base = cls(model="tiny", dtype="fp32", lora=LoraSpec(rank=2, alpha=4), token_dim=64)
        elif name == "cpu":
            base = cls(model="smollm2-135m-instruct", lora=LoraSpec(rank=8, alpha=16), token_dim=256)
        else:
            # GPUs keep SDPA (packed_attention is CPU-only) and the shape PERF-NOTES.md measured
            # for it; the 16 x 64 CPU default was tuned for the packed attention.
            base = cls(model="Qwen/Qwen2.5-0.5B-Instruct", device="cuda",
                       scoring=ScoringConfig(row_len=256, rows_per_call=4),
                       lora=LoraSpec(rank=8, alpha=16, targets=(
                           "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
                       token_dim=1024)
        for key, value in overrides.items():
            if value is not None:
                setattr(base, key, value)
        return base
