"""Policies for ``Coral-v0``: the LLM policy, a random policy, the papers' fixed rule, SB3 models.

All share one small interface (``Policy.act(observation, info) -> JSON string``) so the same
evaluation loop runs any of them.
"""

from .base import Policy, RandomPolicy, run_episode
from .rule import PAPER_RULES, FixedRulePolicy

__all__ = ["Policy", "RandomPolicy", "run_episode", "FixedRulePolicy", "PAPER_RULES", "LLMPolicy", "SB3Policy"]


def __getattr__(name):
    # Heavy policies import torch/transformers/SB3 only when asked for.
    if name == "LLMPolicy":
        from .llm import LLMPolicy

        return LLMPolicy
    if name == "SB3Policy":
        from .sb3 import SB3Policy

        return SB3Policy
    raise AttributeError(name)
