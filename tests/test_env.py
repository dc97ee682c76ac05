"""``Coral-v0`` on the tiny preset: the Gymnasium and SB3 checkers, bad actions, isolation, memo."""

import hashlib
import json

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import coral_env  # noqa: F401  (registers Coral-v0)
from coral_env.backend.lora import adapter_hash
from coral_env.env.wrappers import DiscreteStrategies, EmbedObservation, FactoredStrategies
from coral_env.setup.artifacts import MissingArtifactError
from policies import FixedRulePolicy, RandomPolicy, run_episode

TASKS = ["syn_add", "syn_parity"]
LORA = '{"family": "LORA", "lambda": 0.5}'


@pytest.fixture()
def make(tiny_artifacts):
    def _make(**kwargs):
        kwargs.setdefault("task", TASKS)
        return gym.make("Coral-v0", preset="tiny", artifacts=str(tiny_artifacts), **kwargs)

    return _make


def _fingerprint(model):
    h = hashlib.sha1()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode() + p.detach().float().numpy().tobytes())
    return h.hexdigest()


def test_gymnasium_check_env(make):
    from gymnasium.utils.env_checker import check_env

    env = make(render_mode="ansi")
    check_env(env.unwrapped)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert info["adapter_source"] == "generated+aligned"
    assert "Coral-v0" in env.unwrapped.render()


def test_sb3_check_env_on_wrapped_envs(make):
    from stable_baselines3.common.env_checker import check_env

    check_env(DiscreteStrategies(EmbedObservation(make())))
    factored = FactoredStrategies(EmbedObservation(make(task="syn_add")))
    check_env(factored)
    assert factored.action_masks().shape == (int(sum(factored.action_space.nvec)),)


def test_context_has_description_examples_format_and_facts_and_caches_the_description(make, tiny_artifacts):
    from coral_env.env.contexts import facts_line, format_line
    from coral_env.env.runtime import default_context_model
    from coral_env.tasks import load_task

    env = make(task="syn_parity")
    context = env.reset(seed=0)[0]["context"]
    splits = env.unwrapped.runtime.task("syn_parity").splits
    cached = list((tiny_artifacts / "tiny" / "contexts").glob("syn_parity-*.json"))
    assert cached and json.loads(cached[0].read_text())["model"] == "tiny"  # the tiny preset writes its own
    description = json.loads(cached[0].read_text())["description"]
    assert context.endswith(f"Description: {description.strip()}")  # last: the encoder reads the rest first
    shown = splits.support[:3]  # three verbatim labeled support examples, in order
    positions = [context.index(f"Question: {ex.question}") for ex in shown]
    assert positions == sorted(positions) and all(f"Answer: {ex.answer}" in context for ex in shown)
    assert f"Question: {splits.support[3].question}\n" not in context
    assert "Answer format: multiple choice, 2 options, scored by log-likelihood." in context
    words = sum(len(ex.question.split()) for ex in splits.support) / len(splits.support)
    assert (
        "Task: answer a yes/no question.\n"
        "Task facts: multiple choice with 2 choices; the choices are yes / no; "
        f'very short questions (mean {words:.0f} words); the questions contain numbers; most questions read "Is N an '
        'even number?".\n\nDescription: '
    ) in context
    assert facts_line(load_task("syn_count", seed=0)).startswith(
        "Task facts: free-form generation; the answer is a number; short questions"
    )
    assert default_context_model("tiny", "tiny") == "tiny"
    assert format_line(load_task("syn_count", seed=0)).startswith("Answer format: a free-form answer")


def test_context_examples_are_cut_to_the_budget():
    from coral_env.env.contexts import compose_context, example_block
    from coral_env.tasks import Example, load_task

    long = [
        Example(
            uid=str(i),
            question="word " * 400,
            contexts=("x",),
            continuations=(" a", " b"),
            choices=("a", "b"),
            label=0,
            answer="a",
        )
        for i in range(3)
    ]
    block = example_block(long, k=3, budget=600)
    assert len(block) <= len("Examples:\n") + 600 + 4 and block.count("Question: ") == 3
    assert block.count("Answer: a") == 3 and block.count("Options: a | b") == 3  # kept through the cut
    assert example_block(long, k=0) == ""
    splits = load_task("syn_count", seed=0)
    assert compose_context("Count words.", splits, k=1).count("Question: ") == 1


def test_module_prefixed_id_and_vector_env(tiny_artifacts):
    env = gym.make("coral_env:Coral-v0", task="syn_add", preset="tiny", artifacts=str(tiny_artifacts))
    assert env.reset(seed=0)[0]["context"]
    vec = gym.make_vec(
        "Coral-v0", num_envs=2, vectorization_mode="sync", task="syn_add", preset="tiny", artifacts=str(tiny_artifacts)
    )
    obs, _ = vec.reset(seed=0)
    _, rewards, terminated, _, infos = vec.step([LORA, "not json"])
    assert obs["adapter"].shape[0] == 2 and terminated.all() and rewards[1] == 0


ACTIONS = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=50).map(lambda b: b.decode("latin-1")),
    st.dictionaries(
        st.text(max_size=12),
        st.one_of(st.integers(), st.floats(), st.text(max_size=8), st.booleans(), st.none()),
        max_size=5,
    ).map(json.dumps),
    st.sampled_from(["TTL", "TTT", "LORA", "TTS", "Latent"]).flatmap(
        lambda fam: (
            st.fixed_dictionaries(
                {"family": st.just(fam)},
                optional={
                    "ttl_steps": st.integers(-5, 500),
                    "learning_rate": st.floats(allow_nan=True),
                    "lambda": st.floats(-3, 3),
                    "num_prompt_batches": st.integers(-2, 100),
                    "method": st.text(max_size=10),
                    "slot_steps": st.integers(21, 99),
                    "slot_lr": st.floats(1.5, 9),
                    "batch_size": st.integers(33, 99),
                    "bogus": st.integers(),
                },
            )
            .filter(lambda d: len(d) > 1)
            .map(json.dumps)
        )
    ),
)


def test_fuzz_bad_actions_never_crash_or_leak(make):
    env = make(task="syn_add")
    runtime = env.unwrapped.runtime
    env.reset(seed=0)
    before_model, before_adapter = _fingerprint(runtime.model), adapter_hash(runtime.layout.get_flat())
    seen = {"errors": 0, "valid": 0}

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ACTIONS)
    @example('{"family": "LORA", "lambda": 0.5}')  # valid draws are rare: one of each family always runs
    @example('{"family": "TTL", "ttl_steps": 2, "learning_rate": 0.001, "batch_size": 4}')
    @example('{"family": "Latent", "slot_steps": 2, "slot_lr": 0.1}')
    @example('{"family": "TTS", "num_prompt_batches": 2, "method": "majority_vote"}')
    def run(action):
        env.reset()
        try:
            valid = True
            from coral_env.strategies import parse_strategy

            parse_strategy(action)
        except ValueError:
            valid = False
        loaded = adapter_hash(runtime.layout.get_flat())
        _, reward, terminated, truncated, info = env.step(action)
        assert terminated and not truncated
        if valid:  # a rare valid draw: it runs, is scored, and leaves the model as it found it
            assert "error" not in info and reward in (0.0, 1.0) and 0.0 <= info["metric_after"] <= 1.0
            assert adapter_hash(runtime.layout.get_flat()) == loaded
            assert _fingerprint(runtime.model) == before_model
            seen["valid"] += 1
            return
        assert reward == 0.0
        assert isinstance(info["error"], str) and len(info["error"]) > 10
        seen["errors"] += 1

    run()
    assert seen["errors"] > 900 and seen["valid"] >= 4
    assert _fingerprint(runtime.model) == before_model
    assert adapter_hash(runtime.layout.get_flat()) == before_adapter


def test_episodes_do_not_leak_and_memo_serves_repeats(make):
    env = make(task="syn_add")
    runtime = env.unwrapped.runtime
    obs0, info0 = env.reset(seed=0)
    model_before = _fingerprint(runtime.model)
    ttl = '{"family": "TTL", "ttl_steps": 3, "learning_rate": 0.005, "batch_size": 4}'
    _, _, _, _, first = env.step(ttl)
    assert first["memo_hit"] is False and first["cost"]["ttl_steps"] == 3
    obs1, info1 = env.reset()
    assert info1["metric_before"] == info0["metric_before"]
    np.testing.assert_array_equal(obs1["adapter"], obs0["adapter"])
    assert _fingerprint(runtime.model) == model_before
    _, _, _, _, again = env.step(ttl)
    assert again["memo_hit"] is True and again["metric_after"] == first["metric_after"]


def test_test_split_reuses_the_adapter_a_strategy_left_on_validation(make, monkeypatch):
    import coral_env.env.runtime as runtime_module
    from coral_env.strategies.parse import parse_strategy

    runtime = make(task="syn_add").unwrapped.runtime
    state = runtime.task("syn_add")
    ttl = parse_strategy('{"family": "TTL", "ttl_steps": 3, "learning_rate": 0.01, "batch_size": 4}').strategy
    runs = []
    real_execute = runtime_module.execute
    monkeypatch.setattr(runtime_module, "execute", lambda *a: runs.append(a[0].family) or real_execute(*a))
    runtime.clear_memo()
    fresh, _ = runtime.evaluate(state, state.start_adapter, ttl, split="test")  # no validation run yet: runs it
    runtime.clear_memo()
    on_validation, _ = runtime.evaluate(state, state.start_adapter, ttl)
    reused, hit = runtime.evaluate(state, state.start_adapter, ttl, split="test")
    assert runs == ["TTL", "TTL"] and not hit and reused.cost["reused_validation_adapter"]
    np.testing.assert_array_equal(reused.result.correct, fresh.result.correct)
    assert reused.adapter is on_validation.adapter and reused.result.n == len(state.splits.test)
    latent = parse_strategy('{"family": "Latent", "slot_steps": 2, "slot_lr": 0.05}').strategy
    runtime.evaluate(state, state.start_adapter, latent)
    runtime.evaluate(state, state.start_adapter, latent, split="test")  # per-input family: run on test itself
    assert runs == ["TTL", "TTL", "Latent", "Latent"]


def test_adapter_key_is_cached_per_tensor_and_notices_in_place_changes(make):
    import torch

    runtime = make(task="syn_add").unwrapped.runtime
    adapter = torch.randn(runtime.layout.size)
    key = runtime.adapter_key(adapter)
    assert key == adapter_hash(adapter) and runtime.adapter_key(adapter) == key
    adapter.add_(1.0)  # an in-place change must not be served the stale hash
    assert runtime.adapter_key(adapter) == adapter_hash(adapter) != key


def test_chained_steps_and_delta_reward(make):
    env = make(task="syn_add", max_adaptation_steps=2, reward_mode="delta")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, _, info = env.step('{"family": "LORA", "lambda": 0.8}')
    assert not terminated and obs["metrics"][1] == 1
    assert reward == pytest.approx(info["metric_after"] - info["metric_before"])
    obs, reward, terminated, _, info2 = env.step('{"family": "Latent", "slot_steps": 2, "slot_lr": 0.05}')
    assert terminated and info2["metric_before"] == info["metric_after"]
    with pytest.raises(gym.error.ResetNeeded):
        env.step(LORA)


def test_info_and_test_accuracy(make):
    env = make(task="syn_parity", eval_test=True, context="Decide whether a number is even.")
    obs, info = env.reset(seed=0)
    assert obs["context"] == "Decide whether a number is even."
    assert info["metric"] == "balanced_accuracy"  # two-answer task: prior-insensitive by default
    _, _, _, _, info = env.step(LORA)
    assert 0 <= info["test_accuracy"] <= 1 and json.loads(info["strategy"])["lambda"] == 0.5
    assert set(info["timings"]) == {"step"}
    env.reset()
    _, _, _, _, bad = env.step("not json")
    env.reset()
    _, _, _, _, plain = env.step('{"family": "LORA", "lambda": 0.0}')
    assert "error" in bad and bad["test_accuracy"] == plain["test_accuracy"]  # unchanged adapter
    # per-question test correctness, after the step and of the starting adapter (paired comparisons)
    assert np.mean(info["test_correct"]) == pytest.approx(info["test_accuracy"])
    assert np.mean(info["test_correct_before"]) == pytest.approx(info["test_accuracy_before"])
    assert (
        bad["test_correct"] == bad["test_correct_before"] == plain["test_correct_before"] == info["test_correct_before"]
    )
    n_test = len(env.unwrapped.runtime.task("syn_parity").splits.split("test"))
    assert len(info["test_correct"]) == n_test


def test_bad_arguments_are_clear(make, tmp_path):
    with pytest.raises(KeyError, match="arc_easy"):
        make(task="arc_esay")
    with pytest.raises(ValueError, match="reward_mode"):
        make(reward_mode="sometimes")
    with pytest.raises(ValueError, match="max_adaptation_steps"):
        make(max_adaptation_steps=0)
    with pytest.raises(MissingArtifactError, match="coral setup --preset tiny"):
        gym.make("Coral-v0", task="syn_add", preset="tiny", artifacts=str(tmp_path / "none"))


def test_policies_run_episodes(make):
    env = make()
    for policy in (RandomPolicy(seed=0), FixedRulePolicy()):
        out = run_episode(env, policy, task="syn_add", seed=0)
        assert out["task"] == "syn_add" and out["reward"] in (0.0, 1.0) and len(out["actions"]) == 1


def test_separate_context_writer_writes_every_missing_context_in_one_load_and_is_freed(make, monkeypatch):
    import gc
    import weakref

    import coral_env.env.runtime as runtime_module

    real_load, loaded = runtime_module.load_model, []

    def load(name, *args, **kwargs):
        model, tok = real_load("tiny", *args, **kwargs)
        if name == "writer-under-test":
            loaded.append(weakref.ref(model))
        return model, tok

    monkeypatch.setattr(runtime_module, "load_model", load)
    env = make(task=TASKS, context_model="writer-under-test")  # a new name: no cached context
    env.reset(options={"task": "syn_add"})
    folder = env.unwrapped.runtime.paths.base / "contexts"
    written = {p.name.split("-")[0] for p in folder.glob("*.json") if "writer-under-test" in p.read_text()}
    assert written == set(TASKS)  # the first reset wrote both tasks' descriptions ...
    env.reset(options={"task": "syn_parity"})
    gc.collect()
    assert len(loaded) == 1  # ... with one load of the writer ...
    assert all(ref() is None for ref in loaded)  # ... freed once they were written
    assert env.unwrapped.runtime._context_writer is None
    make(task=["syn_compare"], context_model="writer-under-test").reset()  # a later missing one loads it again
    assert len(loaded) == 2


def test_closed_loop_observation_carries_the_feedback_of_earlier_steps(make):
    env = make(task="syn_add", max_adaptation_steps=3)
    obs0, info = env.reset(seed=0)
    context = obs0["context"]
    assert "Adaptation so far" not in context
    obs1, _, _, _, info1 = env.step('{"family": "LORA", "lambda": 0.8}')
    change = f"{info1['metric_before']:.3f} to {info1['metric_after']:.3f}"
    first = f'step 1: {{"family": "LORA", "lambda": 0.8}} -> {change}'
    assert obs1["context"].startswith(context) and obs1["context"].endswith(first)
    obs2, _, _, _, info2 = env.step('{"family": "Latent", "slot_steps": 2, "slot_lr": 0.05}')
    lines = obs2["context"].splitlines()
    assert lines[-2] == first and lines[-1].startswith('step 2: {"family": "Latent"')
    assert lines[-1].endswith(f"{info2['metric_before']:.3f} to {info2['metric_after']:.3f}")
    assert info2["metric_before"] == info1["metric_after"]
    obs, _ = env.reset()  # a new episode starts without the last one's history
    assert obs["context"] == context


def test_validation_size_scores_the_reward_on_a_prefix_and_reuses_the_adapter(make, monkeypatch):
    import coral_env.env.runtime as runtime_module
    from coral_env.strategies.parse import parse_strategy

    full = make(task="syn_add")
    runtime = full.unwrapped.runtime
    runtime.clear_memo()  # the runtime is shared with earlier tests
    state = runtime.task("syn_add")
    n_val = len(state.splits.validation)
    small = make(task="syn_add", validation_size=5)
    _, info = small.reset(seed=0)
    assert info["validation_questions"] == 5 and full.reset(seed=0)[1]["validation_questions"] == n_val
    start, _ = runtime.evaluate(state, state.start_adapter, None)
    assert info["metric_before"] == pytest.approx(start.result.correct[:5].mean())
    runs = []
    real_execute = runtime_module.execute
    monkeypatch.setattr(runtime_module, "execute", lambda *a: runs.append(a[0].family) or real_execute(*a))
    ttl = '{"family": "TTL", "ttl_steps": 3, "learning_rate": 0.01, "batch_size": 4}'
    _, _, _, _, on_prefix = small.step(ttl)
    _, _, _, _, on_all = full.step(ttl)  # the TTL adapter does not depend on the scored questions: not rerun
    assert runs == ["TTL"] and not on_all["memo_hit"]
    after, _ = runtime.evaluate(state, state.start_adapter, parse_strategy(ttl).strategy)
    assert on_prefix["metric_after"] == pytest.approx(after.result.correct[:5].mean())
    assert on_all["metric_after"] == pytest.approx(after.result.correct.mean())
    with pytest.raises(ValueError, match="validation_size must be an int >= 1"):
        make(task="syn_add", validation_size=0)


def test_descriptions_written_in_one_batch_equal_one_by_one():
    from coral_env.backend.models import load_tokenizer, tiny_model
    from coral_env.env.contexts import labeled_support, write_description, write_descriptions
    from coral_env.tasks import load_task

    tokenizer = load_tokenizer("tiny")
    model = tiny_model(tokenizer, tie_word_embeddings=False, initializer_range=0.1).eval()  # text depends on input
    shown = [labeled_support(load_task(t, seed=0))[:n] for t, n in (("syn_add", 4), ("syn_parity", 1))]
    alone = [write_description(model, tokenizer, ex, "multiple_choice", max_new_tokens=12) for ex in shown]
    batch = write_descriptions(model, tokenizer, shown, ["multiple_choice"] * 2, max_new_tokens=12)
    assert batch == alone and alone[0] != alone[1]
    assert tokenizer.padding_side == "right"  # restored after the left-padded batch


def test_adapters_for_the_same_prompts_are_generated_once(make, monkeypatch):
    runtime = make(task="syn_add").unwrapped.runtime
    generator = runtime.generator_for("syn_add")
    calls = []
    real = generator.generate_adapter
    monkeypatch.setattr(generator, "generate_adapter", lambda prompts: calls.append(len(prompts)) or real(prompts))
    prompts = [f"What is {i} + {i}?" for i in range(5)]
    first, description, source = runtime.adapter_for_prompts("syn_add", prompts)
    again, _, _ = runtime.adapter_for_prompts("syn_add", list(prompts))
    other, _, _ = runtime.adapter_for_prompts("syn_add", prompts[:4])
    assert calls == [5, 4] and again is first and other is not first
    description[:] = 0  # a caller's copy: the cached description is not changed
    assert runtime.adapter_for_prompts("syn_add", prompts)[1].any()


def test_memo_keeps_a_bounded_number_of_strategy_adapters(make, monkeypatch):
    import coral_env.env.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "MAX_MEMO_ADAPTERS", 2)
    env = make(task="syn_add")
    runtime = env.unwrapped.runtime
    runtime.clear_memo()
    actions = [f'{{"family": "LORA", "lambda": {x}}}' for x in (0.2, 0.4, 0.6)]
    first = []
    for action in actions:
        env.reset(seed=0)
        first.append(env.step(action)[4])
    held = [k for k, v in runtime.memo.items() if k[3] and v.adapter is not None]
    assert len(held) == 2 and all('"lambda": 0.2' not in k[3] for k in held)  # the oldest was forgotten
    env.reset()
    again = env.step(actions[0])[4]
    assert not again["memo_hit"] and again["metric_after"] == first[0]["metric_after"]  # recomputed, same
    env.reset()
    assert env.step(actions[2])[4]["memo_hit"]  # the newest is still there
