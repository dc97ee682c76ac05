"""A trained stable-baselines3 model behind the ``Policy`` interface.

The model acts on the wrapped spaces (``EmbedObservation`` + ``DiscreteStrategies`` or
``FactoredStrategies``); this adapter converts a raw ``Coral-v0`` observation and maps the
chosen discrete action back to the JSON the unwrapped environment takes.
"""

from __future__ import annotations

import numpy as np


class SB3Policy:
    """``act(observation) -> JSON`` for an SB3 model trained on a wrapped env.

    Args:
        model: an SB3 ``BaseAlgorithm`` (PPO, A2C, DQN, MaskablePPO).
        wrapped_env: the wrapper stack it was trained on (its outermost wrappers convert
            observations and actions).
        deterministic: greedy actions (default) or sampled.
    """

    def __init__(self, model, wrapped_env, deterministic: bool = True, name: str | None = None) -> None:
        from coral_env.env.wrappers import DiscreteStrategies, EmbedObservation, FactoredStrategies

        self.model, self.deterministic = model, deterministic
        self.name = name or type(model).__name__.lower()
        self.observe = _find(wrapped_env, EmbedObservation)
        self.decode = _find(wrapped_env, DiscreteStrategies) or _find(wrapped_env, FactoredStrategies)
        if self.observe is None or self.decode is None:
            raise ValueError(
                "wrapped_env must contain EmbedObservation and DiscreteStrategies or "
                "FactoredStrategies (the wrappers the model was trained on)"
            )

    def act(self, observation: dict, info: dict | None = None) -> str:
        obs = self.observe.observation(observation)
        kwargs = {}
        if hasattr(self.decode, "action_masks") and "Maskable" in type(self.model).__name__:
            kwargs["action_masks"] = self.decode.action_masks()
        action, _ = self.model.predict(obs, deterministic=self.deterministic, **kwargs)
        return self.decode.action(np.asarray(action))


def _find(env, cls):
    while env is not None:
        if isinstance(env, cls):
            return env
        env = getattr(env, "env", None)
    return None
