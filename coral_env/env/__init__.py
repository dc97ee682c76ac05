"""The ``Coral-v0`` environment, its shared runtime, ``reward_of`` (reply -> strategy -> reward),
task contexts and SB3 wrappers."""

from .core import CoralEnv
from .reward import RewardFunc, reward_of
from .runtime import CoralRuntime, EnvConfig, default_artifacts_root

__all__ = ["CoralEnv", "CoralRuntime", "EnvConfig", "RewardFunc", "default_artifacts_root", "reward_of"]
