"""The policy interface, the random policy, and a one-episode runner."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from coral_env.strategies import sample_strategy


class Policy(Protocol):
    """Maps an observation (and the reset/step info, which names the task) to a JSON action."""

    name: str

    def act(self, observation: dict, info: dict | None = None) -> str: ...

    # Optional: ``reseed(seed)``. A sampling policy that has it is reseeded before each episode
    # of an evaluation from the episode's place (trainers.evaluation), so its draws do not depend
    # on the episodes before it (a resumed job skips some).


class RandomPolicy:
    """Uniform family, then uniform (log-uniform for rates) fields within their ranges; or, given
    ``strategies`` (e.g. the SB3 catalogue), one of them uniformly, the random member of a
    catalogue policy's action set."""

    name = "random"

    def __init__(self, seed: int = 0, strategies: list | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.strategies = list(strategies) if strategies is not None else None
        if self.strategies is not None and not self.strategies:
            raise ValueError("strategies must list at least one strategy (or be None: the whole schema)")

    def reseed(self, seed: int) -> None:
        """Restart the draws from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def act(self, observation: dict, info: dict | None = None) -> str:
        if self.strategies is not None:
            return self.strategies[int(self.rng.integers(len(self.strategies)))].to_json()
        return sample_strategy(self.rng).to_json()


def run_episode(env, policy: Policy, task: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Run one episode; returns the task, the actions, total reward and the last step's info."""
    obs, info = env.reset(seed=seed, options={"task": task} if task else None)
    actions, total, done = [], 0.0, False
    while not done:
        action = policy.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        actions.append(action)
        total += reward
        done = terminated or truncated
    return {"task": info.get("task"), "actions": actions, "reward": total, "info": info}
