"""Paired test-split comparisons of policies (trainers.paired) and the reward mode a trainer
config hands to the env."""

import numpy as np
import pytest

from trainers.paired import episode_matrices, paired_policy_difference, policy_test_gain


def _rows(policy, task, vectors, before):
    return [{"policy": policy, "task": task, "test_correct": v, "test_correct_before": before} for v in vectors]


def test_expected_correctness_averages_episodes_per_question():
    rows = _rows("a", "t", [[1, 0, 1, 0], [1, 1, 0, 0]], [0, 0, 0, 0])
    assert episode_matrices(rows, "a")["t"].mean(axis=0).tolist() == [1.0, 0.5, 0.5, 0.0]


def test_paired_difference_pools_tasks_and_pairs_questions():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 200).tolist()
    better = [1] * 200
    rows = _rows("good", "t1", [better, better], base) + _rows("good", "t2", [base], base)
    rows += _rows("flat", "t1", [base], base) + _rows("flat", "t2", [base, base], base)
    d = paired_policy_difference(rows, "good", "flat")
    # t1 gains every wrong base answer, t2 nothing: the pooled mean halves t1's gain
    expected = (200 - sum(base)) / 400
    assert d["diff"] == pytest.approx(expected) and d["n"] == 400 and d["tasks"] == ["t1", "t2"]
    assert 0 < d["ci"][0] < expected < d["ci"][1]
    same = paired_policy_difference(rows, "flat", "flat")
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0]
    gain = policy_test_gain(rows, "good")
    assert gain["gain"] == pytest.approx(expected) and gain["per_task"]["t2"] == 0
    assert gain["accuracy"] == pytest.approx((200 + sum(base)) / 400)


def test_paired_difference_refuses_what_it_cannot_pair():
    rows = _rows("a", "t", [[1, 0]], [0, 0]) + _rows("a", "t", [[1, 0, 1]], [0, 0, 0])
    with pytest.raises(ValueError, match="different lengths"):
        episode_matrices(rows, "a")
    rows = _rows("a", "t1", [[1]], [0]) + _rows("b", "t2", [[1]], [0])
    with pytest.raises(ValueError, match="eval_test"):
        paired_policy_difference(rows, "a", "b")


def test_trainer_configs_hand_the_reward_mode_to_the_env(monkeypatch):
    import trainers.evaluation as evaluation
    from trainers.restem import RestemConfig
    from trainers.run_config import prepare_run
    from trainers.sb3 import SB3Config

    seen = {}
    monkeypatch.setattr(evaluation, "env_factory", lambda *a, **kw: seen.update(kw) or (lambda tasks, **extra: None))
    cfg = RestemConfig.from_preset("tiny", reward_mode="significant", policy_model="tiny")
    prepare_run(cfg)
    assert seen["reward_mode"] == "significant"
    for config in (RestemConfig, SB3Config):
        with pytest.raises(ValueError, match="reward_mode must be one of"):
            config.from_preset("tiny", reward_mode="sometimes")


def test_ci_counts_which_strategies_a_policy_happened_to_draw():
    # a: one episode right on every question, one wrong on every one; b: half right in each episode.
    # Per question both expect 0.5, but a's mean hinges on its two draws: the CI must say so.
    n = 100
    half = [i % 2 for i in range(n)]
    rows = _rows("a", "t", [[1] * n, [0] * n], [0] * n) + _rows("b", "t", [half, [1 - h for h in half]], [0] * n)
    d = paired_policy_difference(rows, "a", "b")
    assert d["diff"] == 0
    assert d["ci"][0] < -0.3 and d["ci"][1] > 0.3  # question resampling alone would give [0, 0]


def test_a_run_written_before_a_field_existed_resumes_at_its_default(tmp_path):
    import dataclasses
    import json

    from trainers.restem import RestemConfig
    from trainers.run_config import RESUMABLE_CHANGES, check_resume

    cfg = RestemConfig.from_preset("tiny", policy_model="tiny")
    saved = dataclasses.asdict(cfg)
    del saved["reward_mode"]  # a run folder from before --reward-mode
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_resume(tmp_path / "config.json", cfg, RESUMABLE_CHANGES)  # binary: what that run did
    with pytest.raises(ValueError, match="reward_mode"):
        check_resume(tmp_path / "config.json", dataclasses.replace(cfg, reward_mode="significant"), RESUMABLE_CHANGES)
