"""The policies of ``coral demo`` (``trainers.demo``), on one env factory: ReST^EM (zero-shot,
then each iteration), and beside it the oracle, random, fixed-rule and PPO policies and ReST^EM's
final policy in DeGAML's closed loop, all scored on the same held-out tasks.

Each function takes the ``DemoConfig``; every result is cached in the run folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


def make_demo_env(config):
    """The factory of every env of the demo: held-out test scoring on, the validation prefix, the reward."""
    from .evaluation import env_factory

    sized = {"validation_size": config.validation_size} if config.validation_size else {}
    where = (config.preset, config.artifacts_root, config.data_dir, config.seed)
    return env_factory(*where, reward_mode=config.reward_mode, eval_test=True, **sized)


def restem_config(config):
    """The ``RestemConfig`` of the demo's ReST^EM run (under ``OUT/restem``)."""
    from .restem import RestemConfig

    if config.policy_model is None and config.preset != "tiny":
        from policies.llm import default_policy_model

        config = dataclasses.replace(config, policy_model=default_policy_model())
    return RestemConfig.from_preset(
        config.preset,
        **_run_settings(config, "restem"),
        policy_model=config.policy_model,
        iterations=config.iterations,
        samples_per_task=config.samples_per_task,
        keep_per_task=config.keep_per_task,
        num_train_epochs=config.sft_epochs,
        learning_rate=config.sft_lr,
        eval_samples_per_task=config.eval_samples_per_task,
    )


def _run_settings(config, name: str) -> dict:
    """What every trainer run of the demo shares (folder ``OUT/name``, tasks, artifacts, reward,
    test scoring of the held-out episodes, seed, threads)."""
    return dict(
        out=str(Path(config.out) / name),
        train_tasks=config.train_tasks,
        eval_tasks=config.eval_tasks,
        artifacts=config.artifacts_root,
        data_dir=config.data_dir,
        reward_mode=config.reward_mode,
        eval_test=True,
        seed=config.seed,
        threads=config.threads,
        progress=config.progress,
    )


def run_restem(config) -> list[dict]:
    """Train (or resume) ReST^EM; its held-out evaluation rows, zero-shot (iteration 0) first."""
    from .restem import evaluation_rows, train_restem

    settings = restem_config(config)
    train_restem(settings, make_env=make_demo_env(config))
    return evaluation_rows(settings.out)


def final_adapter(config) -> str | None:
    """The PEFT adapter of ReST^EM's last iteration (None: every iteration skipped its SFT)."""
    folders = sorted(Path(config.out, "restem").glob("iter_*/iteration.json"), key=lambda p: int(p.parent.name[5:]))
    return json.loads(folders[-1].read_text())["policy_adapter"] if folders else None


def other_policies(config, adapter: str | None) -> list[dict]:
    """Oracle, random, fixed rule, PPO and the closed loop on the held-out tasks (cached in OUT/policies)."""
    from coral_env.strategies import catalogue
    from policies import FixedRulePolicy, RandomPolicy

    from .compare import evaluate_cached, oracle_rules
    from .run_config import llm_policy_factory

    folder = Path(config.out) / "policies"
    folder.mkdir(parents=True, exist_ok=True)
    make_env = make_demo_env(config)
    tasks, n, rows = config.eval_tasks, config.eval_samples_per_task, []

    def evaluate(name: str, policy, episodes: int, **env_kwargs) -> list[dict]:
        return evaluate_cached(
            folder / f"{name}.json", make_env, tasks, policy, episodes, name, config.seed, config.progress, **env_kwargs
        )

    entries = catalogue(4 if config.preset != "paper" else None)  # the cpu catalogue of the SB3 agents
    if "oracle" in config.policies:
        rules = oracle_rules(folder / "oracle_scan", make_env, tasks, entries, config.progress)
        rows += evaluate("oracle", FixedRulePolicy(rules=rules), 1)
    if "random" in config.policies:
        rows += evaluate("random", RandomPolicy(seed=config.seed, strategies=entries), n)  # PPO's action set
    if "fixed_rule" in config.policies:
        rows += evaluate("fixed_rule", FixedRulePolicy(), 1)
    if "ppo" in config.policies:
        rows += _ppo(config)
    if "closed_loop" in config.policies:
        policy = llm_policy_factory(restem_config(config))(adapter)
        episodes, steps = config.closed_loop_episodes, config.closed_loop_steps
        rows += evaluate("closed_loop", policy, episodes, max_adaptation_steps=steps)
    return rows


def _ppo(config) -> list[dict]:
    from .sb3 import SB3Config, train_sb3

    sb3 = SB3Config.from_preset(
        config.preset,
        **_run_settings(config, "ppo"),
        algo="ppo",
        total_timesteps=config.ppo_timesteps,
        n_steps=min(16, config.ppo_timesteps),
        batch_size=min(16, config.ppo_timesteps),
    )
    return train_sb3(sb3, make_env=make_demo_env(config))["rows"]


__all__ = ["make_demo_env", "restem_config", "run_restem", "final_adapter", "other_policies"]
