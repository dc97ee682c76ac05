"""Accuracy with confidence intervals, and prior-insensitive metrics for two-answer tasks.

At 135M a LoRA can lift BoolQ accuracy by 20 points only by flipping the yes/no prior
(CPU-SCALE-FINDINGS.md), so two-answer tasks also report balanced accuracy and AUC.
"""

from __future__ import annotations

import math

import numpy as np


def wilson_ci(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean per-class recall over the gold classes present."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    recalls = [float(np.mean(preds[labels == c] == c)) for c in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else 0.0


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` for binary ``labels`` (ties count half); None if one class is absent."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    # Average ranks over ties.
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, stat=np.mean) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of ``stat`` over the rows of ``values`` (paired differences too)."""
    values = np.asarray(values)
    if len(values) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    stats = np.array([stat(values[i]) for i in idx])
    return (float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5)))


def mcnemar_improvement_pvalue(before: np.ndarray, after: np.ndarray) -> float:
    """One-sided exact McNemar p-value that ``after`` answers more questions right than ``before``.

    ``before`` and ``after`` are per-question correctness (bool or 0/1) on the same questions.
    Only discordant questions count: with b questions fixed (wrong -> right) and c broken
    (right -> wrong), p = P(X >= b) for X ~ Binomial(b + c, 1/2). No discordant pair gives 1.0.
    """
    from scipy.stats import binomtest

    before, after = np.asarray(before).astype(bool), np.asarray(after).astype(bool)
    if before.shape != after.shape:
        raise ValueError(
            f"per-question correctness of different lengths: {before.shape} vs {after.shape}; "
            "compare evaluations of the same questions"
        )
    fixed = int(np.sum(~before & after))
    broken = int(np.sum(before & ~after))
    if fixed + broken == 0:
        return 1.0
    return float(binomtest(fixed, fixed + broken, 0.5, alternative="greater").pvalue)


def paired_bootstrap_ci(
    before: np.ndarray, after: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile-bootstrap CI of mean(after - before) over the same questions (paired)."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.shape != after.shape:
        raise ValueError(f"paired values of different lengths: {before.shape} vs {after.shape}")
    diff = after - before
    if len(diff) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
