"""The significance reward: the exact McNemar test on constructed correctness, and through the env."""

import gymnasium as gym
import numpy as np
import pytest

import coral_env  # noqa: F401  (registers Coral-v0)
from coral_env.backend.evaluator import EvalResult
from coral_env.backend.metrics import mcnemar_improvement_pvalue, paired_bootstrap_ci
from coral_env.strategies.context import StrategyOutcome


def _correct(n_right: int, n: int = 16, fixed_from: int | None = None) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[:n_right] = True
    return out


def test_mcnemar_counts_only_discordant_questions():
    before = _correct(4)
    one_fixed = before.copy()
    one_fixed[4] = True
    assert mcnemar_improvement_pvalue(before, one_fixed) == pytest.approx(0.5)
    six_fixed = before.copy()
    six_fixed[4:10] = True
    assert mcnemar_improvement_pvalue(before, six_fixed) == pytest.approx(1 / 64)
    # 6 fixed and 2 broken: P(X >= 6 | Binom(8, 1/2)) = (28 + 8 + 1) / 256
    mixed = six_fixed.copy()
    mixed[:2] = False
    assert mcnemar_improvement_pvalue(before, mixed) == pytest.approx(37 / 256)
    assert mcnemar_improvement_pvalue(before, before) == 1.0  # nothing changed
    assert mcnemar_improvement_pvalue(six_fixed, before) == pytest.approx(1.0)  # a loss: one-sided
    with pytest.raises(ValueError, match="same questions"):
        mcnemar_improvement_pvalue(before, before[:8])


def test_paired_bootstrap_ci_brackets_the_paired_mean():
    before = _correct(4, n=100)
    after = before.copy()
    after[4:14] = True  # +10 points, every change the same direction
    lo, hi = paired_bootstrap_ci(before, after)
    assert 0 < lo < 0.10 < hi < 0.2
    assert paired_bootstrap_ci(before, before) == (0.0, 0.0)


def _fake_evaluate(monkeypatch, runtime, before: np.ndarray, after: np.ndarray) -> None:
    def result(correct):
        return EvalResult(
            "syn_add", "multiple_choice", correct, [0] * len(correct), [0] * len(correct), np.ones(len(correct))
        )

    def evaluate(state, adapter, strategy, split="validation", limit=None):
        return StrategyOutcome(result(before if strategy is None else after), None, {}), False

    monkeypatch.setattr(runtime, "evaluate", evaluate)


@pytest.mark.parametrize(
    "mode, level, after, expected",
    [
        ("binary", 0.05, "one_fixed", 1.0),  # +1 question of 16: rewarded by binary ...
        ("significant", 0.05, "one_fixed", 0.0),  # ... but p = 0.5: noise
        ("significant", 0.05, "six_fixed", 1.0),  # p = 1/64
        ("significant", 0.01, "six_fixed", 0.0),  # the level is configurable
        ("significant", 0.05, "same", 0.0),
    ],
)
def test_significant_reward_through_the_env(tiny_artifacts, monkeypatch, mode, level, after, expected):
    env = gym.make(
        "Coral-v0",
        task="syn_add",
        preset="tiny",
        artifacts=str(tiny_artifacts),
        reward_mode=mode,
        significance_level=level,
    )
    before = _correct(4)
    afters = {"same": before.copy(), "one_fixed": before.copy(), "six_fixed": before.copy()}
    afters["one_fixed"][4] = True
    afters["six_fixed"][4:10] = True
    _fake_evaluate(monkeypatch, env.unwrapped.runtime, before, afters[after])
    env.reset(seed=0)
    _, reward, _, _, info = env.step('{"family": "LORA", "lambda": 0.5}')
    assert reward == expected
    assert info["p_value"] == pytest.approx(mcnemar_improvement_pvalue(before, afters[after]))


def test_significance_level_must_be_a_probability(tiny_artifacts):
    with pytest.raises(ValueError, match="significance_level"):
        gym.make(
            "Coral-v0",
            task="syn_add",
            preset="tiny",
            artifacts=str(tiny_artifacts),
            reward_mode="significant",
            significance_level=1.5,
        )
