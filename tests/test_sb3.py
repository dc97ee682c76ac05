"""SB3 wiring on a synthetic contextual bandit with known best actions; pickle-free save/load."""

import argparse
import json

import numpy as np
import pytest
import torch
from fakes import BanditCoralEnv, HashEncoder

from coral_env.strategies import catalogue
from policies.sb3 import SB3Policy
from trainers.commands import config_from_args, register
from trainers.evaluation import evaluate_policy_on_tasks, summarize
from trainers.restem import RestemConfig
from trainers.sb3 import SB3Config, load_sb3, train_sb3, wrap_env

CATALOGUE = catalogue()
BEST = {"task_a": CATALOGUE[3], "task_b": CATALOGUE[20], "task_c": CATALOGUE[11]}  # TTL, TTS, LORA
HELD_OUT = {"task_d": "LORA"}
TARGETS = BEST | HELD_OUT


def make_env(tasks, **_):
    return BanditCoralEnv({t: TARGETS[t] for t in tasks})


def train(tmp_path, algo, steps, **overrides):
    config = SB3Config.from_preset(
        "tiny",
        algo=algo,
        train_tasks=list(BEST),
        eval_tasks=list(HELD_OUT),
        total_timesteps=steps,
        out=str(tmp_path / algo),
        progress=False,
        eval_samples_per_task=2,
        **overrides,
    )
    return config, train_sb3(config, make_env=make_env, encoder=HashEncoder(16))


def test_ppo_learns_the_bandit(tmp_path):
    config, result = train(tmp_path, "ppo", 3072)
    model = result["model"]
    env = make_env(list(BEST))
    greedy = SB3Policy(model, wrap_env(env, "ppo", HashEncoder(16)), deterministic=True)
    sampled = SB3Policy(model, wrap_env(env, "ppo", HashEncoder(16)), deterministic=False)
    assert summarize(evaluate_policy_on_tasks(env, greedy, list(BEST), 1))[0]["success_rate"] == 1.0
    rate = summarize(evaluate_policy_on_tasks(env, sampled, list(BEST), 40))[0]["success_rate"]
    assert rate >= 0.9, rate
    # The held-out evaluation ran through the shared loop and was written next to the policy.
    saved = json.loads((tmp_path / "ppo/eval.json").read_text())
    assert saved["summary"]["n"] == 2 and {r["task"] for r in saved["rows"]} == {"task_d"}
    assert result["trained"]
    # A second call reloads the saved policy instead of training again.
    _, again = train(tmp_path, "ppo", 3072)
    assert not again["trained"] and again["rows"] == result["rows"]
    with pytest.raises(ValueError, match="total_timesteps"):
        train(tmp_path, "ppo", 4096)


@pytest.mark.parametrize("report_to", ["none", "tensorboard"])
def test_training_leaves_no_logger_folder_outside_its_run(tmp_path, monkeypatch, report_to):
    import tempfile

    if report_to == "tensorboard":
        pytest.importorskip("tensorboard")
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # SB3's default logger folder goes here
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    _, result = train(tmp_path, "a2c", 40, report_to=report_to)
    assert result["trained"] and list(scratch.glob("SB3-*")) == []  # SB3's default: an SB3-<date> folder
    run = tmp_path / "a2c"
    expected = ["config.json", "eval.json", "log.jsonl", "policy"] + (["tensorboard"] if report_to != "none" else [])
    assert sorted(p.name for p in run.iterdir()) == expected
    if report_to == "tensorboard":  # the events file is under the run's own folder
        assert list((run / "tensorboard").glob("*/events.out.tfevents.*"))


@pytest.mark.parametrize("algo", ["dqn", "a2c", "maskable_ppo"])
def test_save_load_round_trip_is_pickle_free(tmp_path, algo):
    if algo == "maskable_ppo":
        pytest.importorskip("sb3_contrib")
    _, result = train(tmp_path, algo, 200, learning_starts=50)
    folder = tmp_path / algo / "policy"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "policy.safetensors"]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["algo"] == algo and ("catalogue" in meta) == (algo != "maskable_ppo")
    loaded = load_sb3(folder)
    original = result["model"].policy.state_dict()
    for key, value in loaded.policy.state_dict().items():
        assert torch.equal(value, original[key]), key
    env = wrap_env(make_env(list(BEST)), algo, HashEncoder(16))
    obs, _ = env.reset(options={"task": "task_b"})
    kwargs = {"action_masks": env.action_masks()} if algo == "maskable_ppo" else {}
    a, _ = result["model"].predict(obs, deterministic=True, **kwargs)
    b, _ = loaded.predict(obs, deterministic=True, **kwargs)
    assert np.array_equal(a, b)
    # The reloaded agent drives the raw env through SB3Policy.
    raw = make_env(list(HELD_OUT))
    policy = SB3Policy(loaded, wrap_env(raw, algo, HashEncoder(16)))
    rows = evaluate_policy_on_tasks(raw, policy, list(HELD_OUT), 1)
    assert rows[0]["valid"] and rows[0]["family"] in {"TTL", "LORA", "TTS", "Latent"}


def test_cli_flags_map_to_configs():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "sb3",
            "--algo",
            "dqn",
            "--preset",
            "tiny",
            "--train-tasks",
            "syn_add,syn_sum",
            "--net-arch",
            "32,32",
            "--no-deterministic-eval",
            "--learning-rate",
            "0.01",
        ]
    )
    config = config_from_args(SB3Config, args)
    assert (config.algo, config.preset, config.train_tasks, config.net_arch) == (
        "dqn",
        "tiny",
        ["syn_add", "syn_sum"],
        [32, 32],
    )
    assert config.deterministic_eval is False and config.learning_rate == 0.01
    assert config.total_timesteps == SB3Config.from_preset("tiny").total_timesteps  # the preset's default
    args = parser.parse_args(
        [
            "restem",
            "--preset",
            "paper",
            "--samples-per-task",
            "5",
            "--no-restart-from-base",
            "--eval-tasks",
            "jama",
            "--policy-model",
            "tiny",
        ]
    )
    config = config_from_args(RestemConfig, args)
    assert (config.samples_per_task, config.restart_from_base, config.eval_tasks, config.iterations) == (
        5,
        False,
        ["jama"],
        2,
    )
    assert config.policy_model == "tiny" and "down_proj" in config.lora_targets
    with pytest.raises(ValueError, match="held-out"):
        RestemConfig.from_preset("tiny", train_tasks=["a"], eval_tasks=["a"])


def test_cpu_preset_catalogue_drops_the_twenty_adapter_ensembles():
    from coral_env.env.wrappers import DiscreteStrategies

    config = SB3Config.from_preset("cpu")
    assert config.max_prompt_batches == 4 and SB3Config.from_preset("paper").max_prompt_batches is None

    import gymnasium as gym

    class Env(gym.Env):
        observation_space = gym.spaces.Discrete(1)
        action_space = gym.spaces.Discrete(1)

    assert DiscreteStrategies(Env(), max_prompt_batches=4).action_space.n == 25
    assert DiscreteStrategies(Env()).action_space.n == 30


def test_training_env_scores_validation_only_and_takes_the_training_prefix(tmp_path):
    calls = []

    def recording(tasks, **kwargs):
        calls.append((tuple(tasks), kwargs))
        return make_env(tasks)

    config = SB3Config.from_preset(
        "tiny",
        algo="a2c",
        train_tasks=list(BEST),
        eval_tasks=list(HELD_OUT),
        total_timesteps=8,
        out=str(tmp_path / "a2c"),
        progress=False,
        eval_test=True,
        train_validation_size=50,
    )
    train_sb3(config, make_env=recording, encoder=HashEncoder(16))
    assert calls[0] == (tuple(BEST), {"eval_test": False, "validation_size": 50})  # training: no test scoring
    assert calls[1] == (tuple(HELD_OUT), {"strict_heldout": True})  # held out: the config's eval_test, whole split
