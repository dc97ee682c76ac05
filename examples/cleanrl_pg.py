"""A CleanRL-style policy-gradient loop on Coral-v0, with no Coral code inside the algorithm.

Coral appears only where the env is made: ``gym.make("Coral-v0")`` and the two stock wrappers
that give it SB3/CleanRL spaces (``EmbedObservation``: text context -> Box; ``DiscreteStrategies``:
an index into the strategy catalogue). Everything else is the plain Gymnasium vector API and
torch, so any single-file RL implementation (CleanRL's PPO, REINFORCE, ...) runs the same way.
Episodes are one step (a contextual bandit), so this is REINFORCE with a running-mean baseline.

    python examples/cleanrl_pg.py --task syn_add,syn_compare --preset tiny --updates 20
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn


def make_coral_env(tasks: list[str], **kwargs) -> Callable[[], gym.Env]:
    """The only Coral-specific lines: make the env and wrap it for flat observations/actions."""

    def thunk() -> gym.Env:
        import coral_env  # noqa: F401  (registers Coral-v0)
        from coral_env.env.wrappers import DiscreteStrategies, EmbedObservation

        return DiscreteStrategies(EmbedObservation(gym.make("Coral-v0", task=tasks, **kwargs)))

    return thunk


class Agent(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, n_actions))

    def dist(self, obs: torch.Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.net(obs))


def train(env_fns: list[Callable[[], gym.Env]], updates: int = 20, lr: float = 0.05, seed: int = 0) -> dict:
    """REINFORCE over a ``SyncVectorEnv``; returns the mean reward per update and the agent."""
    torch.manual_seed(seed)
    envs = gym.vector.SyncVectorEnv(env_fns)
    agent = Agent(int(np.prod(envs.single_observation_space.shape)), int(envs.single_action_space.n))
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr)
    baseline, history = 0.0, []
    obs, _ = envs.reset(seed=seed)
    for _ in range(updates):
        dist = agent.dist(torch.as_tensor(obs, dtype=torch.float32))
        action = dist.sample()
        next_obs, reward, terminated, truncated, _ = envs.step(action.numpy())
        reward_t = torch.as_tensor(reward, dtype=torch.float32)
        loss = -((reward_t - baseline) * dist.log_prob(action)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        baseline = 0.9 * baseline + 0.1 * float(reward_t.mean())
        history.append(float(reward_t.mean()))
        # one-step episodes: every env is done; the next observation is a reset's
        obs, _ = envs.reset() if (terminated | truncated).all() else (next_obs, None)
    envs.close()
    return {"rewards": history, "agent": agent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="syn_add,syn_compare", help="comma-separated tasks or task config paths")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--artifacts", default=None)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--updates", type=int, default=20)
    args = parser.parse_args()
    tasks = args.task.split(",")
    fns = [make_coral_env(tasks, preset=args.preset, artifacts=args.artifacts, auto_setup=True)] * args.num_envs
    result = train(fns, updates=args.updates)
    print("mean reward per update:", " ".join(f"{r:.2f}" for r in result["rewards"]))


if __name__ == "__main__":
    main()
