"""SB3 with --n-envs (worker processes) and --report-to tensorboard for sb3, grpo and restem."""

from __future__ import annotations

from collections import Counter

import pytest
from fakes import BanditCoralEnv, HashEncoder

from trainers.sb3 import SB3Config, train_sb3

TARGETS = {"task_a": "LORA", "task_b": "TTL", "task_d": "LORA"}


def make_bandit(tasks, **_):
    return BanditCoralEnv({t: TARGETS[t] for t in tasks})


def test_sb3_trains_on_two_worker_processes_and_logs_to_tensorboard(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    config = SB3Config.from_preset(
        "tiny",
        algo="ppo",
        train_tasks=["task_a", "task_b"],
        eval_tasks=["task_d"],
        total_timesteps=64,
        n_steps=16,
        out=str(tmp_path / "ppo"),
        progress=False,
        n_envs=2,
        report_to="tensorboard",
    )
    result = train_sb3(config, make_env=make_bandit, encoder=HashEncoder(16))
    assert result["trained"] and result["model"].n_envs == 2
    assert result["model"].num_timesteps == 64
    assert list((tmp_path / "ppo" / "tensorboard").rglob("events.out.tfevents.*"))


def test_grpo_logs_to_tensorboard(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from test_grpo import LoraPolicy, SpyEnv

    from trainers.grpo import GrpoConfig, train_grpo

    config = GrpoConfig.from_preset(
        "tiny",
        out=str(tmp_path / "run"),
        train_tasks=["a"],
        eval_tasks=["b"],
        progress=False,
        report_to="tensorboard",
        eval_base=False,
    )
    train_grpo(config, make_env=lambda tasks, **_: SpyEnv(tasks, Counter()), make_policy=lambda a: LoraPolicy())
    events = list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and any(f.stat().st_size > 0 for f in events)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("n_envs", 0, "n_envs must be an int >= 1"),
        ("report_to", "wandb", "report_to must be one of none, tensorboard"),
    ],
)
def test_sb3_bad_settings(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SB3Config.from_preset("tiny", **{field: value})


def test_missing_tensorboard_names_the_extra(monkeypatch) -> None:
    import builtins

    from trainers.reporting import check_report_to

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard":
            raise ImportError("no tensorboard")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[tensorboard\]"'):
        check_report_to("tensorboard")
    check_report_to("none")
