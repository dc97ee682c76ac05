"""Policies: random, the papers' fixed rule, the LLM policy's prompt/extraction/sampling."""

import json

import pytest

from coral_env.strategies import parse_strategy
from policies import FixedRulePolicy, RandomPolicy
from policies.llm import LLMPolicy, SamplingConfig

OBS = {"context": "A multiple-choice science task for grade-school students."}


def test_random_policy_is_valid_and_seeded():
    a = [RandomPolicy(seed=3).act(OBS) for _ in range(1)] + [RandomPolicy(seed=3).act(OBS)]
    assert a[0] == a[1]
    policy = RandomPolicy(seed=0)
    families = {parse_strategy(policy.act(OBS)).strategy.family for _ in range(60)}
    assert families == {"TTL", "LORA", "TTS", "Latent"}


def test_random_policy_over_a_catalogue_draws_its_entries_uniformly():
    from collections import Counter

    from coral_env.strategies import catalogue

    entries = catalogue(4)
    policy = RandomPolicy(seed=0, strategies=entries)
    drawn = Counter(parse_strategy(policy.act(OBS)).strategy for _ in range(2500))
    assert set(drawn) == set(entries)  # only catalogue entries, every one of them
    assert max(drawn.values()) < 1.5 * 2500 / len(entries)  # none favoured
    with pytest.raises(ValueError, match="at least one strategy"):
        RandomPolicy(strategies=[])


def test_fixed_rule_follows_the_paper():
    policy = FixedRulePolicy()
    assert json.loads(policy.act(OBS, {"task": "arc_easy"}))["family"] == "TTL"
    assert json.loads(policy.act(OBS, {"task": "arc_challenge"}))["family"] == "Latent"
    assert json.loads(policy.act(OBS, {"task": "boolq"}))["family"] == "LORA"
    assert json.loads(policy.act(OBS, {"task": "hellaswag"})) == {
        "family": "TTS",
        "num_prompt_batches": 20,
        "method": "max_confidence",
    }
    assert json.loads(policy.act(OBS, {"task": "syn_add"}))["family"] == "LORA"  # unlisted: default


def test_llm_policy_extracts_and_validates(tiny):
    model, tok = tiny
    policy = LLMPolicy(model, tok, sampling=SamplingConfig(max_new_tokens=8, max_retries=1), seed=0)
    prompt = policy.prompt(OBS["context"], "arc_easy")
    assert "Task Context:" in prompt and '"family": "TTL"' in prompt and "arc_easy" in prompt
    action, valid = policy.to_action('Sure! ```json\n{"family": "TTT", "ttl_steps": 5}\n``` done')
    assert valid and json.loads(action)["family"] == "TTL"
    raw, valid = policy.to_action('{"family": "LORA", "lambda": 7}')
    assert not valid and raw == '{"family": "LORA", "lambda": 7}'
    # The random tiny model writes no valid JSON: act samples 1 + max_retries replies and returns
    # the last one as is (the draws replayed from the same seed).
    policy.reseed(5)
    returned = policy.act(OBS, {"task": "arc_easy"})
    policy.reseed(5)
    drawn = [policy.sample(OBS["context"], "arc_easy")[0] for _ in range(2)]
    assert not any(policy.to_action(r)[1] for r in drawn) and drawn[0] != drawn[1]
    assert returned == drawn[1]


def test_llm_policy_resamples_invalid_replies_up_to_max_retries(tiny):
    model, tok = tiny
    calls = []

    def scripted(policy, replies):
        replies = iter(replies)
        policy.sample = lambda context, task=None, n=1, seed=None: calls.append((context, task, n)) or [next(replies)]
        return policy

    bad, out_of_range, good = (
        "no JSON here",
        '{"family": "LORA", "lambda": 7}',
        'ok: {"family": "lora", "lambda": 0.25}',
    )
    policy = scripted(LLMPolicy(model, tok, sampling=SamplingConfig(max_retries=2)), [bad, out_of_range, good, bad])
    assert policy.act(OBS, {"task": "boolq"}) == '{"family": "LORA", "lambda": 0.25}'  # extracted, canonical
    assert calls == [(OBS["context"], "boolq", 1)] * 3  # stopped at the first valid reply
    calls.clear()
    policy = scripted(LLMPolicy(model, tok, sampling=SamplingConfig(max_retries=1)), [bad, out_of_range, good])
    assert policy.act(OBS) == out_of_range and len(calls) == 2  # retries spent: the last reply, raw
    calls.clear()
    policy = scripted(LLMPolicy(model, tok, sampling=SamplingConfig(max_retries=0)), [good])
    assert json.loads(policy.act(OBS)) == {"family": "LORA", "lambda": 0.25} and len(calls) == 1


def test_reward_of_reads_and_scores_a_reply_one_way():
    from fakes import BanditCoralEnv

    from coral_env.env import reward_of

    env = BanditCoralEnv({"a": "LORA", "b": "TTL"})
    reward, info = reward_of('Here: ```json\n{"family": "lora", "lambda": 0.25}\n```', env, "a")
    assert (reward, info["valid"], info["task"]) == (1.0, True, "a")
    assert info["action"] == '{"family": "LORA", "lambda": 0.25}' and info["metric_after"] == 0.6
    reward, info = reward_of({"family": "LORA"}, env, "b")  # an action, not a reply
    assert (reward, info["valid"], info["metric_after"]) == (0.0, True, 0.45)
    reward, info = reward_of('{"family": "LORA", "lambda": 7}', env, "a")  # invalid: env's error
    assert (reward, info["valid"]) == (0.0, False) and "out of range" in info["error"]
    reward, info = reward_of("no JSON at all", env, "a")
    assert (reward, info["action"], info["valid"]) == (0.0, "no JSON at all", False)
    assert env.steps == 4


def test_shared_prefix_sampling_matches_separate_prefills_and_is_seeded(tiny):
    model, tok = tiny
    # The same seed gives the same uniform draws, so one prefill + an expanded cache must give
    # exactly the replies of K separate prefills (transformers' num_return_sequences path).
    sampling = SamplingConfig(max_new_tokens=12)
    shared = LLMPolicy(model, tok, sampling=sampling, shared_prefix=True)
    separate = LLMPolicy(model, tok, sampling=sampling, shared_prefix=False)
    replies = shared.sample(OBS["context"], "arc_easy", n=4, seed=0)
    assert replies == separate.sample(OBS["context"], "arc_easy", n=4, seed=0)
    assert len(set(replies)) == 4  # four different samples, not one reply copied
    # a seed fixes the draws, whatever the policy's own generator did before
    shared.sample(OBS["context"], n=2)  # advances the policy's generator
    assert shared.sample(OBS["context"], "arc_easy", n=4, seed=0) == replies
    assert shared.sample(OBS["context"], "arc_easy", n=4, seed=1) != replies
