"""GRPO (TRL) for the LLM policy: completions are executed in the env, whose reward drives the
step; the run resumes from TRL checkpoints; held-out evaluation as ReST^EM's."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter

import gymnasium as gym
import pytest
from fakes import BanditCoralEnv

import coral_env  # noqa: F401  (registers Coral-v0)
from trainers.grpo import EnvReward, GrpoConfig, train_grpo

LORA = '{"family": "LORA", "lambda": 0.5}'


def message(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_env_reward_scores_each_completion_in_coral_env(tiny_artifacts) -> None:
    # tie_reward=0.5: a valid strategy that leaves the metric unchanged (the random tiny model's
    # usual case) earns 0.5 from the env, an invalid reply 0, so the rewards below are the env's
    kwargs = dict(task=["syn_add"], preset="tiny", artifacts=str(tiny_artifacts), tie_reward=0.5)
    env, direct = gym.make("Coral-v0", **kwargs), gym.make("Coral-v0", **kwargs)
    expected = []
    for action in ('{"family": "LORA", "lambda": 1.0}', LORA):
        direct.reset(options={"task": "syn_add"})
        _, r, _, _, info = direct.step(action)
        expected.append((r, info["metric_after"]))
    reward = EnvReward(env)
    completions = [
        message('Here: {"family": "LORA", "lambda": 1.0} done'),
        message("no json at all"),
        message('{"family": "LORA", "lambda": 2}'),
        message(LORA),
    ]
    got = reward(["p"] * 4, completions, task=["syn_add"] * 4)
    assert got == [expected[0][0], 0.0, 0.0, expected[1][0]] and 0.0 < got[0] <= 1.0
    assert [a for _, a, _ in reward.history][1:3] == ["no json at all", '{"family": "LORA", "lambda": 2}']


class SpyEnv(BanditCoralEnv):
    """A bandit whose reward depends on the action text, so a run's rewards can only come from it."""

    def __init__(self, tasks, steps: Counter) -> None:
        super().__init__({t: "LORA" for t in tasks})
        self.counter = steps
        self.rewards: list[float] = []

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        reward = (len(action) % 5) / 4
        self.counter["env"] += 1
        self.rewards.append(reward)
        return obs, reward, terminated, truncated, info


class LoraPolicy:
    name = "stub"

    def act(self, observation, info=None):
        return LORA


def test_grpo_step_reward_comes_from_the_env_and_resumes(tmp_path, monkeypatch) -> None:
    import coral_env.backend

    steps, envs, order = Counter(), [], []

    def make_env(tasks, **_):
        envs.append(SpyEnv(tasks, steps))
        envs[-1].prepare_contexts = lambda: order.append(("contexts", tuple(tasks)))
        return envs[-1]

    def load_model(*args, **kwargs):
        order.append(("model",))
        return load(*args, **kwargs)

    load = coral_env.backend.load_model
    monkeypatch.setattr(coral_env.backend, "load_model", load_model)

    config = GrpoConfig.from_preset(
        "tiny",
        out=str(tmp_path / "run"),
        train_tasks=["syn_a", "syn_b"],
        eval_tasks=["held"],
        max_steps=1,
        num_generations=4,
        progress=False,
    )
    result = train_grpo(
        config, make_env=make_env, make_policy=lambda adapter: order.append(("policy",)) or LoraPolicy()
    )
    # each env's contexts are written before a policy model loads (the writer is gone by then)
    assert order[:2] == [("contexts", ("syn_a", "syn_b")), ("model",)]
    assert order[2:4] == [("contexts", ("held",)), ("policy",)]
    train = result["train"]
    assert train["steps"] == 1 and train["episodes"] == 4 == steps["env"] - 2 * 2  # + the eval episodes
    spy = envs[0]
    assert len(spy.rewards) == 4
    assert train["rewards"][0] == pytest.approx(sum(spy.rewards) / 4)  # TRL's logged reward is the env's
    adapter = tmp_path / "run" / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    assert (tmp_path / "run" / "trainer" / "checkpoint-1").is_dir()
    assert [s["policy"] for s in result["summaries"]] == ["zero_shot", "grpo"]
    assert result["summaries"][1]["n"] == 2

    # rerun: the final adapter and evaluations exist, nothing runs again
    before = steps["env"]
    again = train_grpo(config, make_env=make_env, make_policy=lambda adapter: LoraPolicy())
    assert steps["env"] == before and again["summaries"] == result["summaries"]
    # killed after checkpoint-1 of a 2-step run: TRL resumes there and runs only step 2
    shutil.rmtree(adapter)
    longer = dataclasses.replace(config, max_steps=2)
    resumed = train_grpo(longer, make_env=make_env, make_policy=lambda adapter: LoraPolicy())
    assert resumed["train"]["resumed_from"].endswith("checkpoint-1")
    assert resumed["train"]["steps"] == 2 and resumed["train"]["episodes"] == 4  # one new group
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["steps"] == 2  # re-evaluated


def test_grpo_config_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        GrpoConfig.from_preset("tiny", num_generations=1)
    with pytest.raises(ValueError, match="report_to must be one of none, tensorboard, got 'wandb'"):
        GrpoConfig.from_preset("tiny", report_to="wandb")
    with pytest.raises(ValueError, match="held-out tasks must not be trained on"):
        GrpoConfig.from_preset("tiny", train_tasks=["syn_add"], eval_tasks=["syn_add"])
    # the LLM-policy settings GRPO shares with ReST^EM are checked before any model loads, as there
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        GrpoConfig.from_preset("tiny", temperature=0.0)
    with pytest.raises(ValueError, match="lora_dropout must be in"):
        GrpoConfig.from_preset("tiny", lora_dropout=1.0)
    with pytest.raises(ValueError, match="train_dtype must be auto, bf16, fp16 or fp32, got 'int8'"):
        GrpoConfig.from_preset("tiny", train_dtype="int8")
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        GrpoConfig.from_preset("tiny", workers=0)
    config = GrpoConfig.from_preset("tiny", out=str(tmp_path / "run"), train_tasks=["a"], eval_tasks=["b"])
    (tmp_path / "run").mkdir()
    saved = json.loads(json.dumps(dataclasses.asdict(config))) | {"learning_rate": 0.5, "max_steps": 99}
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"different settings \(learning_rate\)"):  # max_steps may grow
        train_grpo(config, make_env=lambda tasks, **_: SpyEnv(tasks, Counter()))
