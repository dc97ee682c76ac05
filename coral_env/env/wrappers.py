"""Wrappers that give ``Coral-v0`` the spaces stable-baselines3 understands.

* ``EmbedObservation``: the Dict observation -> one ``Box``: sentence embedding of the context,
  then the adapter description, then the metrics.
* ``DiscreteStrategies``: ``Discrete(n)`` over the schema's strategy catalogue.
* ``FactoredStrategies``: ``MultiDiscrete`` (family + per-field bins) with ``action_masks()``
  (the TTS cost cap, and TTS methods that would only repeat the vote on generative tasks)
  for sb3-contrib's MaskablePPO.

>>> # env = DiscreteStrategies(EmbedObservation(gym.make("Coral-v0", task="syn_add", preset="tiny")))
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..strategies.schema_views import FactoredEncoding, catalogue


def _encoder(env: gym.Env):
    """The prompt encoder the env's generator uses (one model per process)."""
    base = env.unwrapped
    return base.runtime.generator_for(base.tasks[0]).encoder


class EmbedObservation(gym.ObservationWrapper):
    """Dict observation -> ``Box(embedding_dim + adapter_dim + 2)`` float32.

    The context is embedded with the generator's sentence encoder (all-MiniLM-L6-v2 by
    default); embeddings are cached per text.
    """

    def __init__(self, env: gym.Env, encoder=None) -> None:
        super().__init__(env)
        self.encoder = encoder or _encoder(env)
        self._cache: dict[str, np.ndarray] = {}
        inner = env.observation_space
        dim = int(self.encoder.dim) + inner["adapter"].shape[0] + inner["metrics"].shape[0]
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)

    def embed(self, text: str) -> np.ndarray:
        if text not in self._cache:
            self._cache[text] = self.encoder.sentence_embeddings([text])[0].float().numpy()
        return self._cache[text]

    def observation(self, observation: dict) -> np.ndarray:
        parts = [self.embed(observation["context"]), observation["adapter"], observation["metrics"]]
        return np.concatenate(parts).astype(np.float32)


class DiscreteStrategies(gym.ActionWrapper):
    """``Discrete(len(catalogue(max_prompt_batches)))``: action i is that catalogue's i-th
    strategy as JSON (``max_prompt_batches`` drops costlier TTS entries; None keeps all 30)."""

    def __init__(self, env: gym.Env, max_prompt_batches: int | None = None) -> None:
        super().__init__(env)
        self.strategies = catalogue(max_prompt_batches)
        self.action_space = spaces.Discrete(len(self.strategies))

    def action(self, action) -> str:
        return self.strategies[int(action)].to_json()


class FactoredStrategies(gym.ActionWrapper):
    """``MultiDiscrete(nvec)``: family + one dim per field; see ``FactoredEncoding``.

    ``action_masks()`` (sb3-contrib's MaskablePPO) masks the bins that would not do what they
    say: TTS prompt-batch counts above ``max_prompt_batches`` (the cost cap the ``Discrete``
    catalogue applies too) and, on a generative task, the TTS methods ``max_confidence`` and
    ``sum_logprobs`` (without choice log-probabilities they fall back to the majority vote).
    """

    _VOTE_ONLY = ("max_confidence", "sum_logprobs")

    def __init__(self, env: gym.Env, max_prompt_batches: int | None = None) -> None:
        super().__init__(env)
        self.encoding = FactoredEncoding()
        self.max_prompt_batches = max_prompt_batches
        self.action_space = spaces.MultiDiscrete(np.array(self.encoding.nvec, dtype=np.int64))

    def action(self, action) -> str:
        return self.encoding.decode([int(a) for a in action]).to_json()

    def _generative(self) -> bool:
        state = getattr(self.env.unwrapped, "_state", None)
        return state is not None and state.task.splits.kind == "generative"

    def action_masks(self) -> np.ndarray:
        """Flat mask over all bins of all dims (MaskablePPO's MultiDiscrete convention)."""
        masks = []
        generative = self._generative()
        for (family, spec), bins in zip(self.encoding.dims, self.encoding.bins):
            keep = np.ones(len(bins), dtype=bool)
            if family == "TTS" and spec.name == "num_prompt_batches" and self.max_prompt_batches is not None:
                keep = np.array([b <= self.max_prompt_batches for b in bins])
            elif family == "TTS" and spec.name == "method" and generative:
                keep = np.array([b not in self._VOTE_ONLY for b in bins])
            masks.append(keep)
        return np.concatenate(masks)
