"""The model-backend part of a scale preset (tiny, cpu, paper): which model, which LoRA, which dtype."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import PRESETS as PRESETS  # re-exported: the backend names the presets too
from ..config import Presets
from ..config import check_preset as check_preset
from .lora import LoraSpec
from .scoring import ScoringConfig

_PAPER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class BackendConfig(Presets):
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

    PRESET_FIELD = ""  # the preset is not recorded; the model, LoRA and shapes are
    PRESET_VALUES = {
        "tiny": dict(model="tiny", dtype="fp32", lora=LoraSpec(rank=2, alpha=4), token_dim=64),
        "cpu": dict(model="smollm2-135m-instruct", lora=LoraSpec(rank=8, alpha=16), token_dim=256),
        # GPUs keep SDPA (packed_attention is CPU-only) with rows of 256 tokens, 4 per call; the
        # 16 x 64 CPU default was tuned for the packed attention.
        "paper": dict(
            model="Qwen/Qwen2.5-0.5B-Instruct",
            device="cuda",
            scoring=ScoringConfig(row_len=256, rows_per_call=4),
            lora=LoraSpec(rank=8, alpha=16, targets=_PAPER_TARGETS),
            token_dim=1024,
        ),
    }
