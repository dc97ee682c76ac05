"""Stage-1/2 pretraining runs: checkpoint collection, generator training, CVAE training, the
``coral setup`` pipeline that chains them, and the papers' LoRA baselines.

Imports agents, backend and tasks only (setup sits below env, policies and trainers).
"""

from .artifacts import ArtifactPaths, MissingArtifactError
from .collect import COLLECTION_PRESETS, CollectionConfig, CollectionResult, collect
from .pretrain_generator import TRAINING_PRESETS, GeneratorTrainingConfig, pretrain_generator, task_prompts

__all__ = [
    "ArtifactPaths",
    "MissingArtifactError",
    "COLLECTION_PRESETS",
    "CollectionConfig",
    "CollectionResult",
    "collect",
    "TRAINING_PRESETS",
    "GeneratorTrainingConfig",
    "pretrain_generator",
    "task_prompts",
]
