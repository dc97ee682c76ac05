"""Agents layer: the prompt encoder, the generator (stage 1), task vectors and the alignment CVAE
(stage 2); imports only the backend."""

from .encoder import DEFAULT_ENCODER, PromptEncoder, resolve_encoder_path
from .generator import GENERATOR_PRESETS, Generator, GeneratorConfig, HyperConvBlock, HyperConvDecoder

__all__ = [
    "DEFAULT_ENCODER",
    "PromptEncoder",
    "resolve_encoder_path",
    "GENERATOR_PRESETS",
    "Generator",
    "GeneratorConfig",
    "HyperConvBlock",
    "HyperConvDecoder",
]
