"""Model backend: model loading, the LoRA layout, and the evaluator (imports only the tasks layer
and `coral_env.config`)."""

from .config import PRESETS, BackendConfig, check_preset
from .lora import AdapterLayout, LoraSpec, adapter_hash, attach_lora, load_adapter, save_adapter
from .models import ModelNotFoundError, load_model, load_tokenizer, resolve_dtype

__all__ = [
    "PRESETS",
    "BackendConfig",
    "check_preset",
    "AdapterLayout",
    "LoraSpec",
    "adapter_hash",
    "attach_lora",
    "load_adapter",
    "save_adapter",
    "ModelNotFoundError",
    "load_model",
    "load_tokenizer",
    "resolve_dtype",
]
