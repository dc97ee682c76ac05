"""Adaptation strategies: the action contract and the four family runners.

The contract (importing it loads no torch): ``schema`` (the family table and the strategy
dataclasses), ``values`` (field coercion, the error type), ``parse`` (action -> strategy),
``extract`` (the JSON object in free LLM text) and ``schema_views`` (JSON Schema, prompt,
catalogue, encodings). The runners (``ttl``, ``lora_mix``, ``tts``, ``latent``, named by the
table and resolved by ``runners``) import torch and are imported on their own.
"""

from .extract import extract_json
from .parse import ParsedStrategy, action_from_reply, parse_strategy
from .schema import (
    ENSEMBLE_METHODS,
    FAMILIES,
    FAMILY_NAMES,
    ROUTING_METHODS,
    TTS_METHODS,
    BaseStrategy,
    FamilySpec,
    FieldSpec,
    LatentStrategy,
    LoRAStrategy,
    Strategy,
    TTLStrategy,
    TTSStrategy,
    default_strategy,
    family_spec,
    strategy_class,
)
from .schema_views import (
    POLICY_SYSTEM_PROMPT,
    FactoredEncoding,
    catalogue,
    catalogue_index,
    describe_families,
    json_schema,
    paper_strategies,
    policy_prompt,
    sample_strategy,
)
from .values import MAX_ACTION_CHARS, StrategyValidationError

__all__ = [
    "ENSEMBLE_METHODS",
    "FAMILIES",
    "FAMILY_NAMES",
    "MAX_ACTION_CHARS",
    "POLICY_SYSTEM_PROMPT",
    "ROUTING_METHODS",
    "TTS_METHODS",
    "BaseStrategy",
    "FactoredEncoding",
    "FamilySpec",
    "FieldSpec",
    "LatentStrategy",
    "LoRAStrategy",
    "ParsedStrategy",
    "Strategy",
    "StrategyValidationError",
    "TTLStrategy",
    "TTSStrategy",
    "action_from_reply",
    "catalogue",
    "catalogue_index",
    "default_strategy",
    "describe_families",
    "extract_json",
    "family_spec",
    "json_schema",
    "paper_strategies",
    "parse_strategy",
    "policy_prompt",
    "sample_strategy",
    "strategy_class",
]
