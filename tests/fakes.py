"""A fast stand-in for ``Coral-v0`` with a known answer: a contextual bandit over strategies.

``BanditCoralEnv`` keeps ``Coral-v0``'s spaces and ``info`` contract (Dict observation with a
text context, a JSON action, one-step episodes, reward 1 iff the validation metric improves)
but needs no model or artifacts: each task has one rewarded target, a catalogue strategy
(reward iff the canonical strategy matches) or a family name (reward iff the family matches).
``HashEncoder`` stands in for the sentence encoder of ``EmbedObservation``.
"""

from __future__ import annotations

import hashlib

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from coral_env.env.spaces import AnyText
from coral_env.strategies import Strategy, StrategyValidationError, parse_strategy

ADAPTER_DIM = 8
BASE_METRIC = 0.5


class BanditCoralEnv(gym.Env):
    """``Coral-v0``'s interface over a synthetic bandit.

    Args:
        targets: ``{task: Strategy | family name}``: what earns reward 1 on that task.
        contexts: optional ``{task: text}``; default ``"Synthetic task <name>."``.
        gain: metric change of a rewarded strategy (others lose ``gain / 2``).
    """

    metadata = {"render_modes": []}

    def __init__(
        self, targets: dict[str, Strategy | str], contexts: dict[str, str] | None = None, gain: float = 0.1
    ) -> None:
        self.targets = dict(targets)
        self.tasks = list(self.targets)
        self.contexts = {t: (contexts or {}).get(t, f"Synthetic task {t}.") for t in self.tasks}
        self.gain = gain
        self.observation_space = spaces.Dict(
            {
                "context": AnyText(4096),
                "adapter": spaces.Box(-np.inf, np.inf, shape=(ADAPTER_DIM,), dtype=np.float32),
                "metrics": spaces.Box(np.array([-1.0, 0.0], dtype=np.float32), np.array([1.0, 1.0], dtype=np.float32)),
            }
        )
        self.action_space = AnyText(10_000, min_length=1)
        self.task: str | None = None
        self.done = True
        self.steps = 0  # env steps taken (tests count work with it)
        self.memo: set[tuple[str, str]] = set()

    def _obs(self) -> dict:
        seed = int(hashlib.sha256(self.task.encode()).hexdigest()[:8], 16)
        adapter = np.random.default_rng(seed).normal(size=ADAPTER_DIM).astype(np.float32)
        return {
            "context": self.contexts[self.task],
            "adapter": adapter,
            "metrics": np.array([BASE_METRIC, 0.0], dtype=np.float32),
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        name = (options or {}).get("task")
        if name is None:
            name = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        if name not in self.tasks:
            raise ValueError(f"options['task'] = {name!r} is not one of this env's tasks {self.tasks}")
        self.task, self.done = name, False
        return self._obs(), {
            "task": name,
            "metric": "accuracy",
            "metric_before": BASE_METRIC,
            "accuracy_before": BASE_METRIC,
            "adapter_source": "fake",
        }

    def step(self, action):
        if self.done:
            raise gym.error.ResetNeeded("call reset() before step()")
        self.done = True
        self.steps += 1
        info = {"task": self.task, "metric": "accuracy", "metric_before": BASE_METRIC, "accuracy_before": BASE_METRIC}
        try:
            strategy = parse_strategy(action).strategy
        except StrategyValidationError as exc:
            info |= {"error": str(exc), "metric_after": BASE_METRIC, "accuracy_after": BASE_METRIC}
            return self._obs(), 0.0, True, False, info
        target = self.targets[self.task]
        hit = (
            (strategy.family == target)
            if isinstance(target, str)
            else (strategy.canonical_json() == target.canonical_json())
        )
        after = BASE_METRIC + (self.gain if hit else -self.gain / 2)
        key = (self.task, strategy.canonical_json())
        info |= {
            "strategy": strategy.canonical_json(),
            "notes": [],
            "metric_after": after,
            "accuracy_after": after,
            "cost": {"evaluations": 1},
            "memo_hit": key in self.memo,
        }
        self.memo.add(key)
        return self._obs(), 1.0 if hit else 0.0, True, False, info


class HashEncoder:
    """Deterministic pseudo-embeddings (one fixed random unit vector per text), ``dim`` wide."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim

    def sentence_embeddings(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(v / np.linalg.norm(v))
        return torch.tensor(np.stack(rows), dtype=torch.float32)
