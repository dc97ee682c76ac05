"""Trainers of the policy agent: ReST^EM for the LLM policy, stable-baselines3 agents, and the
held-out evaluation they share.

Importing this package is cheap; each trainer imports torch, TRL, PEFT or SB3 when it runs.

* ``trainers.restem``: ``RestemConfig``, ``train_restem`` (``python -m trainers.restem``).
* ``trainers.sb3``: ``SB3Config``, ``train_sb3``, ``save_sb3``, ``load_sb3`` (``python -m trainers.sb3``).
* ``trainers.grpo``: ``GrpoConfig``, ``train_grpo`` (TRL GRPO, rewards from the env).
* ``trainers.run_config``: what the runs share: ``prepare_run`` (threads, seeds, tasks, env
  factory), ``PolicyTrainingConfig`` (the LLM-policy settings of ReST^EM and GRPO),
  ``check_resume`` and ``llm_policy_factory``.
* ``trainers.evaluation``: ``evaluate_policy_on_tasks``, ``summarize``, ``comparison_table``,
  ``family_table``, ``comparison_plot``.
* ``trainers.commands``: ``TRAINERS``, one row per command (``coral restem``, ``sb3``, ``grpo``,
  ``demo``, ``report``): its config dataclass and ``command(config)``, imported when it runs.
"""

__all__ = ["RestemConfig", "train_restem", "SB3Config", "train_sb3", "save_sb3", "load_sb3", "evaluate_policy_on_tasks"]

_HOMES = {
    "RestemConfig": "restem",
    "train_restem": "restem",
    "SB3Config": "sb3",
    "train_sb3": "sb3",
    "save_sb3": "sb3",
    "load_sb3": "sb3",
    "evaluate_policy_on_tasks": "evaluation",
}


def __getattr__(name):
    # Submodules load on first use, so `python -m trainers.restem` runs a module not yet imported.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(name)
