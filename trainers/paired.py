"""Paired test-split comparisons of policies on the same held-out questions.

A sampling policy's episodes on a task pick different strategies, so each test question gets
the policy's *expected* correctness: the mean, over its episodes on that task, of the
question's correctness after the chosen strategy (``test_correct`` in the evaluation rows,
written when the env runs with ``eval_test=True``). Two policies are then compared question by
question over the same held-out questions (all tasks pooled), with a paired bootstrap 95% CI.

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


def expected_correctness(rows: list[dict], policy: str, key: str = "test_correct") -> dict[str, np.ndarray]:
    """``{task: per-question mean of rows[key]}`` over ``policy``'s episodes that carry ``key``."""
    out: dict[str, list] = {}
    for r in rows:
        if r["policy"] == policy and r.get(key) is not None:
            out.setdefault(r["task"], []).append(np.asarray(r[key], dtype=np.float64))
    for task, vectors in out.items():
        if len({len(v) for v in vectors}) != 1:
            raise ValueError(f"{policy} on {task}: test_correct vectors of different lengths (mixed split sizes?)")
    return {task: np.mean(vectors, axis=0) for task, vectors in out.items()}


def paired_policy_difference(rows: list[dict], a: str, b: str, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean test correctness of policy ``a`` minus ``b`` over the held-out questions both were
    scored on, with a paired bootstrap 95% CI; ``n`` is the number of questions."""
    from coral_env.backend.metrics import paired_bootstrap_ci

    ea, eb = expected_correctness(rows, a), expected_correctness(rows, b)
    tasks = [t for t in ea if t in eb]
    if not tasks:
        raise ValueError(f"no held-out task has test_correct rows for both {a!r} and {b!r} (run with eval_test)")
    after, before = np.concatenate([ea[t] for t in tasks]), np.concatenate([eb[t] for t in tasks])
    lo, hi = paired_bootstrap_ci(before, after, n_boot=n_boot, seed=seed)
    return {"diff": float((after - before).mean()), "ci": [lo, hi], "n": int(len(after)), "tasks": tasks}


def policy_test_gain(rows: list[dict], policy: str, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """``policy``'s mean test gain over each episode's starting adapter, paired over questions."""
    from coral_env.backend.metrics import paired_bootstrap_ci

    after, before = expected_correctness(rows, policy), expected_correctness(rows, policy, "test_correct_before")
    tasks = [t for t in after if t in before]
    if not tasks:
        raise ValueError(f"{policy!r} has no rows with test_correct (run the evaluation with eval_test)")
    a, b = np.concatenate([after[t] for t in tasks]), np.concatenate([before[t] for t in tasks])
    lo, hi = paired_bootstrap_ci(b, a, n_boot=n_boot, seed=seed)
    return {
        "gain": float((a - b).mean()),
        "ci": [lo, hi],
        "accuracy": float(a.mean()),
        "n": int(len(a)),
        "per_task": {t: float((after[t] - before[t]).mean()) for t in tasks},
    }


def policy_test_table(rows: list[dict], policies: list[str], reference: str | None = None) -> str:
    """Markdown: per policy, test accuracy, test gain over the starting adapter (paired CI) and,
    with ``reference``, the paired difference from that policy."""
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
