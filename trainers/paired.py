"""Paired test-split comparisons of policies on the same held-out questions.

A sampling policy's episodes on a task pick different strategies, so each test question gets
the policy's *expected* correctness: the mean, over its episodes on that task, of the
question's correctness after the chosen strategy (``test_correct`` in the evaluation rows,
written when the env runs with ``eval_test=True``). Two policies are compared question by
question over the same held-out questions (all tasks pooled). The 95% CI comes from a two-level
bootstrap: each replicate resamples every policy's episodes within each task (which strategies
a policy happens to draw is part of the uncertainty) and then the questions, the same questions
for both policies (paired).

>>> rows = [{"policy": "a", "task": "t", "test_correct": [1, 1, 0], "test_correct_before": [0, 1, 0]},
...         {"policy": "b", "task": "t", "test_correct": [0, 1, 0], "test_correct_before": [0, 1, 0]}]
>>> round(paired_policy_difference(rows, "a", "b")["diff"], 3)
0.333
>>> round(policy_test_gain(rows, "a")["gain"], 3)
0.333
"""

from __future__ import annotations

from typing import Any

import numpy as np


def episode_matrices(rows: list[dict], policy: str, key: str = "test_correct") -> dict[str, np.ndarray]:
    """``{task: (episodes, questions) array of rows[key]}`` over ``policy``'s episodes that carry it."""
    out: dict[str, list] = {}
    for r in rows:
        if r["policy"] == policy and r.get(key) is not None:
            out.setdefault(r["task"], []).append(np.asarray(r[key], dtype=np.float64))
    for task, vectors in out.items():
        if len({len(v) for v in vectors}) != 1:
            raise ValueError(f"{policy} on {task}: {key} vectors of different lengths (mixed split sizes?)")
    return {task: np.stack(vectors) for task, vectors in out.items()}


def _two_level_ci(pairs: list[tuple[np.ndarray, np.ndarray]], n_boot: int, seed: int) -> tuple[float, float]:
    """95% CI of the pooled mean of (a - b): per replicate, each side's episodes resampled within
    its task, then the task's questions (shared by both sides)."""
    rng = np.random.default_rng(seed)
    total = sum(a.shape[1] for a, _ in pairs)
    means = np.zeros(n_boot)
    for a, b in pairs:
        n_q = a.shape[1]
        ea = a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1)  # (n_boot, n_q)
        eb = b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(axis=1)
        q = rng.integers(0, n_q, size=(n_boot, n_q))
        diff = np.take_along_axis(ea - eb, q, axis=1)
        means += diff.sum(axis=1) / total
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _compare(ma: dict, mb: dict, n_boot: int, seed: int, missing: str) -> dict[str, Any]:
    """Per-question mean of side a minus side b over the tasks both have, pooled, with the
    two-level CI; raises ``ValueError(missing)`` when no task has both."""
    tasks = [t for t in ma if t in mb]
    if not tasks:
        raise ValueError(missing)
    pairs = [(ma[t], mb[t]) for t in tasks]
    per_task = [a.mean(0) - b.mean(0) for a, b in pairs]
    lo, hi = _two_level_ci(pairs, n_boot, seed)
    diff = np.concatenate(per_task)
    return {
        "diff": float(diff.mean()),
        "ci": [lo, hi],
        "n": int(len(diff)),
        "tasks": tasks,
        "per_task": {t: float(d.mean()) for t, d in zip(tasks, per_task)},
        "accuracy": float(np.concatenate([a.mean(0) for a, _ in pairs]).mean()),
    }


def paired_policy_difference(rows: list[dict], a: str, b: str, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean test correctness of policy ``a`` minus ``b`` over the held-out questions both were
    scored on, with the two-level paired bootstrap 95% CI; ``n`` is the number of questions."""
    missing = f"no held-out task has test_correct rows for both {a!r} and {b!r} (run with eval_test)"
    c = _compare(episode_matrices(rows, a), episode_matrices(rows, b), n_boot, seed, missing)
    return {k: c[k] for k in ("diff", "ci", "n", "tasks")}


def policy_test_gain(rows: list[dict], policy: str, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """``policy``'s mean test gain over each episode's starting adapter (the same two-level
    bootstrap, the starting adapter's correctness as the other side)."""
    after, before = episode_matrices(rows, policy), episode_matrices(rows, policy, "test_correct_before")
    missing = f"{policy!r} has no rows with test_correct (run the evaluation with eval_test)"
    c = _compare(after, before, n_boot, seed, missing)
    return {"gain": c["diff"], "ci": c["ci"], "accuracy": c["accuracy"], "n": c["n"], "per_task": c["per_task"]}


def policy_test_table(rows: list[dict], policies: list[str], reference: str | None = None) -> str:
    """Markdown: per policy, test accuracy, test gain over the starting adapter (CI) and, with
    ``reference``, the paired difference from that policy."""
    head = "| policy | questions | test accuracy | test gain [95% CI] |"
    rule = "|---|---:|---:|---|"
    if reference:
        head += f" minus {reference} [95% CI] |"
        rule += "---|"
    lines = [head, rule]
    for p in policies:
        g = policy_test_gain(rows, p)
        line = f"| {p} | {g['n']} | {g['accuracy']:.3f} | {g['gain']:+.3f} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}] |"
        if reference:
            if p == reference:
                line += " - |"
            else:
                d = paired_policy_difference(rows, p, reference)
                line += f" {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] |"
        lines.append(line)
    return "\n".join(lines)
