"""ReST^EM on a bandit with known answers: what is kept, the SFT data and labels, the saved
adapter, resumption. The sampler is a stub; the fine-tuning is real (TRL on the tiny model)."""

import json
from collections import Counter
from pathlib import Path

import pytest
from fakes import BanditCoralEnv

from coral_env.strategies import parse_strategy
from trainers.restem import RestemConfig, build_sft_trainer, keep_rewarded, sft_example, train_restem

LORA = '{"family": "LORA", "lambda": 0.5}'
TTS = '{"family": "TTS", "num_prompt_batches": 2, "method": "majority_vote"}'
REPLIES = {
    # LORA earns reward 1 on syn_a: kept are replies 0 and 4 (1 repeats 0; the cap is 2, so 5 is dropped).
    "syn_a": [
        LORA,
        'Sure! {"family":"LORA","lambda":0.5} hope it helps',
        "no json here",
        '{"family": "TTL"}',
        '{"family": "LORA", "lambda": 0.25}',
        '{"family": "LORA", "lambda": 0.75}',
    ],
    # TTL earns reward 1 on syn_b; nothing here is TTL, one reply is out of range.
    "syn_b": [
        '{"family": "Latent"}',
        '{"family": "LORA", "lambda": 2}',
        '{"family": "TTS"}',
        '{"family": "LORA"}',
        "{",
        '{"family": "Latent", "slot_steps": 3}',
    ],
}
TARGETS = {"syn_a": "LORA", "syn_b": "TTL", "held_1": "LORA", "held_2": "TTS"}


class StubPolicy:
    """Known replies per task; counts the work asked of it. It acts on what it was built from:
    LORA with a trained adapter folder, TTS without one, so evaluations show which one they used."""

    seeds: dict[str, int] = {}  # task -> the seed of its last sample() call

    def __init__(self, calls: Counter, replies=REPLIES, fail_on: str | None = None, adapter=None) -> None:
        self.calls, self.replies, self.fail_on = calls, replies, fail_on
        self.name = "stub"
        self.trained = adapter is not None and (Path(adapter) / "adapter_model.safetensors").exists()

    def sample(self, context, task, n, seed=None):
        if task == self.fail_on:
            raise KeyboardInterrupt("killed")
        self.calls["sample"] += 1
        StubPolicy.seeds[task] = seed
        assert context == f"Synthetic task {task}."
        return self.replies[task][:n]

    def act(self, observation, info=None):
        self.calls["act"] += 1
        return LORA if self.trained else TTS


def run(tmp_path, calls, steps, replies=REPLIES, fail_on=None, on_env=None, on_policy=None, **overrides):
    settings = dict(
        out=str(tmp_path / "run"),
        train_tasks=["syn_a", "syn_b"],
        eval_tasks=["held_1", "held_2"],
        samples_per_task=6,
        keep_per_task=2,
        eval_samples_per_task=3,
        max_steps=1,
        progress=False,
    )
    config = RestemConfig.from_preset("tiny", **(settings | overrides))

    def make_env(tasks, **kwargs):
        steps[("env_kwargs", tuple(tasks))] = kwargs
        env = BanditCoralEnv({t: TARGETS[t] for t in tasks})
        original = env.step

        def counted(action):
            steps["env"] += 1
            return original(action)

        env.step = counted
        if on_env:
            on_env(env, tasks)
        return env

    def make_policy(adapter):
        calls["make_policy"] += 1
        if on_policy:
            on_policy(adapter)
        return StubPolicy(calls, replies, fail_on, adapter)

    return config, train_restem(config, make_env=make_env, make_policy=make_policy)


def test_iteration_keeps_rewarded_samples_trains_and_resumes(tmp_path):
    calls, steps = Counter(), Counter()
    config, result = run(tmp_path, calls, steps)
    out = tmp_path / "run"
    (it,) = result["iterations"]
    assert it["kept"] == {"syn_a": 2, "syn_b": 0}
    # training samples are scored on validation alone; the held-out env is strict
    assert steps[("env_kwargs", ("syn_a", "syn_b"))] == {"eval_test": False}
    assert steps[("env_kwargs", ("held_1", "held_2"))] == {"strict_heldout": True}
    samples = json.loads((out / "iter_1/samples/syn_a.json").read_text())
    assert [r["reward"] for r in samples["results"]] == [1, 1, 0, 0, 1, 1]
    assert [r["valid"] for r in samples["results"]] == [True, True, False, True, True, True]
    assert [r["reward"] for r in json.loads((out / "iter_1/samples/syn_b.json").read_text())["results"]] == [0] * 6

    # The SFT data: exactly the kept samples, prompt = the policy's chat messages, completion = canonical JSON.
    data = json.loads((out / "iter_1/dataset.json").read_text())
    assert [json.loads(d["completion"][0]["content"]) for d in data] == [
        {"family": "LORA", "lambda": 0.5},
        {"family": "LORA", "lambda": 0.25},
    ]
    assert data[0]["prompt"][0]["role"] == "system" and "Synthetic task syn_a." in data[0]["prompt"][1]["content"]
    assert data[0]["completion"][0]["role"] == "assistant"

    # Real SFT happened and produced a PEFT adapter that LLMPolicy loads.
    adapter = out / "iter_1/adapter"
    meta = json.loads((adapter / "coral_policy.json").read_text())
    assert meta["sft"]["steps"] == 1 and meta["sft"]["examples"] == 2 and meta["base_model"] == "tiny"
    assert not list((out / "iter_1").glob(".adapter.*"))  # the temp folder is gone
    from peft import PeftModel

    from policies.llm import LLMPolicy, SamplingConfig

    policy = LLMPolicy("tiny", adapter=str(adapter), sampling=SamplingConfig(max_new_tokens=4))
    assert isinstance(policy.model, PeftModel)
    trained_b = [p for n, p in policy.model.named_parameters() if "lora_B" in n]
    assert trained_b and any(p.abs().sum() > 0 for p in trained_b)  # B starts at zero: it moved
    assert len(policy.sample("Synthetic task held_1.", "held_1", n=2)) == 2

    # Held-out evaluation: base (iter_0) and iteration 1, 3 episodes per task.
    assert [s["policy"] for s in result["summaries"]] == ["zero_shot", "restem_iter1"]
    # the base policy (no adapter) acts TTS, the iteration's policy (its trained adapter) LORA
    assert result["summaries"][0]["per_task"]["held_1"]["success_rate"] == 0.0
    assert result["summaries"][0]["per_task"]["held_2"]["success_rate"] == 1.0
    assert result["summaries"][1]["per_task"]["held_1"]["success_rate"] == 1.0
    assert result["summaries"][1]["per_task"]["held_2"]["success_rate"] == 0.0
    assert calls == Counter({"sample": 2, "act": 12, "make_policy": 2}) and steps["env"] == 24

    # A second run on the same folder redoes nothing.
    mtime = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    calls2, steps2 = Counter(), Counter()
    _, again = run(tmp_path, calls2, steps2)
    assert calls2 == Counter() and steps2 == Counter()
    assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    assert again["iterations"] == result["iterations"]
    events = [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert events.count("sft") == 1 and events.count("iteration") == 1


def test_killed_run_resumes_where_it_stopped_and_empty_iteration_skips_sft(tmp_path):
    nothing = {t: ['{"family": "Latent"}'] * 6 for t in ("syn_a", "syn_b")}
    calls, steps = Counter(), Counter()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, calls, steps, replies=nothing, fail_on="syn_b", eval_base=False)
    assert calls["sample"] == 1 and steps["env"] == 6  # syn_a was sampled and scored, then the kill
    calls, steps = Counter(), Counter()
    config, result = run(tmp_path, calls, steps, replies=nothing, eval_base=False)
    assert calls["sample"] == 1 and steps["env"] == 6 + 6  # only syn_b's samples, then the evaluation
    # syn_b's draws are seeded by their place in the run, not by a stream syn_a's (skipped) sampling advanced.
    from coral_env.seeding import derived_seed

    assert StubPolicy.seeds["syn_b"] == derived_seed(config.seed, "restem-sample", 1, "syn_b")
    assert (
        StubPolicy.seeds["syn_a"] == derived_seed(config.seed, "restem-sample", 1, "syn_a") != StubPolicy.seeds["syn_b"]
    )
    (it,) = result["iterations"]
    assert it["sft"]["skipped"] and it["policy_adapter"] is None
    assert not (tmp_path / "run/iter_1/adapter").exists()
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert any(r["event"] == "sft_skipped" for r in log)
    # Each event once: the resumed run did not log syn_a's samples again.
    events = [(r["event"], r.get("iteration"), r.get("task")) for r in log]
    assert events == [
        ("samples", 1, "syn_a"),
        ("samples", 1, "syn_b"),
        ("sft_skipped", 1, None),
        ("eval", 1, None),
        ("iteration", 1, None),
    ]
    run(tmp_path, Counter(), Counter(), replies=nothing, eval_base=False)  # finished: nothing logged
    assert len((tmp_path / "run/log.jsonl").read_text().splitlines()) == len(log)
    with pytest.raises(ValueError, match="different settings"):
        run(tmp_path, Counter(), Counter(), replies=nothing, eval_base=False, samples_per_task=5)


def test_keep_rewarded_dedupes_and_caps():
    rows = [{"reward": r, "valid": True, "strategy": s} for r, s in [(1, "a"), (1, "a"), (0, "b"), (1, "c"), (1, "d")]]
    assert [r["strategy"] for r in keep_rewarded(rows, cap=2)] == ["a", "c"]
    assert [r["strategy"] for r in keep_rewarded(rows, cap=9, dedupe=False)] == ["a", "a", "c", "d"]


def test_sft_labels_cover_only_the_completion(tmp_path):
    config = RestemConfig.from_preset("tiny", out=str(tmp_path), progress=False)
    strategy = parse_strategy('{"family": "TTT", "ttl_steps": 5}').strategy
    record = sft_example("A synthetic arithmetic task.", "syn_add", strategy.canonical_json())
    trainer = build_sft_trainer(config, [record], tmp_path / "trainer")
    example = trainer.train_dataset[0]
    labels = example["labels"]
    first = next(i for i, label in enumerate(labels) if label != -100)
    assert all(label == -100 for label in labels[:first]) and all(label != -100 for label in labels[first:])
    target = trainer.processing_class.decode([t for t in labels if t != -100])
    assert target.startswith(strategy.to_json()) and "<|im_end|>" in target
    prompt = trainer.processing_class.decode(example["input_ids"][:first])
    assert prompt.endswith("<|im_start|>assistant\n") and "A synthetic arithmetic task." in prompt


def test_completion_positions_only_scores_the_completion_with_the_same_loss(tmp_path, monkeypatch):
    import torch
    import trl.trainer.utils as trl_utils

    from trainers.completion_logprobs import completion_positions_only

    config = RestemConfig.from_preset("tiny", out=str(tmp_path), progress=False)
    record = sft_example("A synthetic arithmetic task.", "syn_add", '{"family": "LORA", "lambda": 0.5}')
    trainer = build_sft_trainer(config, [record], tmp_path / "trainer")
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    projected = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def counted(hidden, *args):
        projected.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counted)
    trainer.model.eval()  # no dropout: both passes see the same network
    with torch.no_grad():
        full = trainer.compute_loss(trainer.model, dict(batch))
        with completion_positions_only():
            compact = trainer.compute_loss(trainer.model, dict(batch))
    assert projected[0] == batch["input_ids"].shape[1] - 1 > 10 * labelled  # TRL's CPU path: every position
    assert projected[1] == labelled  # the shim: the completion's positions only
    assert torch.allclose(full, compact, atol=1e-5)
    assert trl_utils._use_triton(torch.device("cpu")) is False  # restored after the block


def test_lora_layers_trains_only_the_top_layers(tmp_path):
    config = RestemConfig.from_preset("tiny", out=str(tmp_path), progress=False, lora_layers=1)
    record = sft_example("A synthetic arithmetic task.", "syn_add", '{"family": "LORA", "lambda": 0.5}')
    trainer = build_sft_trainer(config, [record], tmp_path / "trainer")
    trained = {n.split(".layers.")[1].split(".")[0] for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained == {str(trainer.model.config.num_hidden_layers - 1)}
    assert RestemConfig.from_preset("cpu").lora_layers == 4 and RestemConfig.from_preset("paper").lora_layers == 0
    with pytest.raises(ValueError, match="lora_layers must be an int >= 0"):
        RestemConfig.from_preset("tiny", lora_layers=-1)


def test_every_context_is_written_before_a_policy_model_loads(tmp_path):
    # the context writer (Qwen at cpu) and the policy (Qwen) must never be in memory together
    order = []

    def on_env(env, tasks):
        env.prepare_contexts = lambda: order.append(("contexts", tuple(tasks)))

    run(tmp_path, Counter(), Counter(), on_env=on_env, on_policy=lambda adapter: order.append(("policy", adapter)))
    first_policy = next(i for i, event in enumerate(order) if event[0] == "policy")
    assert set(order[:first_policy]) == {("contexts", ("held_1", "held_2")), ("contexts", ("syn_a", "syn_b"))}
