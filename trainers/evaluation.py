"""Held-out evaluation shared by every policy, and the comparison table and plot.

One loop scores any ``Policy`` (``act(observation, info) -> JSON``) on held-out tasks of a
``Coral-v0``-like env; every row is one episode. ``summarize`` turns rows into per-policy
success rates (Wilson 95% CI) and mean metric/accuracy gains (bootstrap 95% CI);
``comparison_table``, ``family_table`` and ``comparison_plot`` present them side by side.

Success means the validation metric strictly improved: the binary reward with the default
``tie_reward=0`` (the reward-1 rate).

>>> rows = [{"policy": "p", "task": "t", "success": True, "metric_gain": 0.1, "accuracy_gain": 0.1,
...          "family": "LORA", "valid": True}]
>>> summarize(rows)[0]["success_rate"]
1.0
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from coral_env.strategies import FAMILIES

FAMILY_ORDER = (*(f.name for f in FAMILIES), "invalid")
"""Families in table order, then invalid actions (rows, columns and plot stacks follow it)."""


def evaluate_policy_on_tasks(
    env,
    policy,
    tasks: list[str],
    n_per_task: int = 1,
    name: str | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run ``n_per_task`` episodes of ``policy`` on each task; one row per episode.

    Args:
        env: a ``Coral-v0``-like env whose tasks include ``tasks`` (raw Dict observations, JSON
            actions), a ``coral_env.env.ray_pool.EpisodePool`` (one-step episodes scored on Ray
            actors, the same rows), or a callable ``tasks -> env``.
        policy: anything with ``act(observation, info) -> str``.
        n_per_task: episodes per task (sampling policies differ between them; for a
            deterministic policy one is enough).
        name: the policy's label in the rows (default ``policy.name``).
        seed: seeds the env's first reset, and (with the label, task and episode index) each
            episode of a policy that has ``reseed(seed)``: its draws do not depend on earlier
            episodes, so a resumed job that skips some draws what an uninterrupted one draws.

    Returns:
        rows with ``policy, task, sample, action, strategy, family, valid, heldout, reward, success,
        metric, metric_before, metric_after, metric_gain, accuracy_before, accuracy_after,
        accuracy_gain, steps, error`` and ``test_accuracy`` when the env reports it.
    """
    from coral_env.seeding import derived_seed

    if n_per_task < 1:
        raise ValueError(f"n_per_task must be >= 1, got {n_per_task}")
    if callable(env) and not hasattr(env, "step"):
        env = env(list(tasks))
    label = name or getattr(policy, "name", type(policy).__name__)
    reseed, base_seed = getattr(policy, "reseed", None), 0 if seed is None else seed
    bar = _progress(len(tasks) * n_per_task, f"eval {label}", progress)
    rows = []
    if hasattr(env, "score"):  # an EpisodePool: act here, score the one-step episodes on its workers
        for task in tasks:
            obs, info = env.reset(seed=seed, options={"task": task})
            seed = None
            actions = []
            for sample in range(n_per_task):  # the same draws as the loop below
                if reseed is not None:
                    reseed(derived_seed(base_seed, "episode", label, task, sample))
                actions.append(policy.act(obs, info))
            scored = env.score([(task, a) for a in actions], replies=False)
            for sample, (action, (reward, last)) in enumerate(zip(actions, scored)):
                rows.append(_row(label, task, sample, [action], float(reward), dict(info), last))
                bar.update(1)
        bar.close()
        return rows
    for task in tasks:
        for sample in range(n_per_task):
            if reseed is not None:
                reseed(derived_seed(base_seed, "episode", label, task, sample))
            obs, info = env.reset(seed=seed, options={"task": task})
            seed = None  # seed only the first reset
            first, actions, total, done = dict(info), [], 0.0, False
            while not done:
                action = policy.act(obs, info)
                obs, reward, terminated, truncated, info = env.step(action)
                actions.append(action)
                total += float(reward)
                done = terminated or truncated
            rows.append(_row(label, task, sample, actions, total, first, info))
            bar.update(1)
    bar.close()
    return rows


def _row(
    policy: str, task: str, sample: int, actions: list[str], reward: float, first: dict, last: dict
) -> dict[str, Any]:
    valid = "error" not in last
    before, after = float(first["metric_before"]), float(last["metric_after"])
    acc_before, acc_after = float(first["accuracy_before"]), float(last["accuracy_after"])
    strategy = last.get("strategy") if valid else None
    family = _family(strategy) if strategy else "invalid"
    row = {
        "policy": policy,
        "task": task,
        "sample": sample,
        "action": actions[0] if len(actions) == 1 else actions,
        "strategy": strategy,
        "family": family,
        "valid": valid,
        "heldout": first.get("heldout"),
        "reward": reward,
        "success": after > before,
        "metric": last.get("metric", first.get("metric")),
        "metric_before": before,
        "metric_after": after,
        "metric_gain": after - before,
        "accuracy_before": acc_before,
        "accuracy_after": acc_after,
        "accuracy_gain": acc_after - acc_before,
        "steps": len(actions),
        "error": last.get("error"),
    }
    for key in ("test_accuracy", "test_accuracy_before", "test_correct", "test_correct_before"):
        if key in last:
            row[key] = last[key]
    if "test_accuracy_before" in last:
        row["test_gain"] = last["test_accuracy"] - last["test_accuracy_before"]
    return row


def _family(strategy_json: str) -> str:
    import json

    return json.loads(strategy_json)["family"]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


# ----- summaries ---------------------------------------------------------------------------------


def summarize(rows: list[dict], n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Per policy (in first-seen order): success rate with Wilson 95% CI, mean metric and
    accuracy gains with bootstrap 95% CIs, valid-action rate, family counts overall and per task."""
    from coral_env.backend.metrics import bootstrap_ci, wilson_ci

    out = []
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == policy]
        wins = sum(bool(r["success"]) for r in mine)
        metric_gain = np.array([r["metric_gain"] for r in mine], dtype=float)
        acc_gain = np.array([r["accuracy_gain"] for r in mine], dtype=float)
        per_task = {}
        for task in dict.fromkeys(r["task"] for r in mine):
            t = [r for r in mine if r["task"] == task]
            per_task[task] = {
                "n": len(t),
                "success_rate": sum(bool(r["success"]) for r in t) / len(t),
                "mean_metric_gain": float(np.mean([r["metric_gain"] for r in t])),
                "mean_accuracy_gain": float(np.mean([r["accuracy_gain"] for r in t])),
                "families": dict(Counter(r["family"] for r in t)),
            }
        out.append(
            {
                "policy": policy,
                "n": len(mine),
                "successes": wins,
                "success_rate": wins / len(mine),
                "success_ci": list(wilson_ci(wins, len(mine))),
                "valid_rate": sum(bool(r["valid"]) for r in mine) / len(mine),
                "mean_metric_gain": float(metric_gain.mean()),
                "metric_gain_ci": list(bootstrap_ci(metric_gain, n_boot=n_boot, seed=seed)),
                "mean_accuracy_gain": float(acc_gain.mean()),
                "accuracy_gain_ci": list(bootstrap_ci(acc_gain, n_boot=n_boot, seed=seed)),
                "families": dict(Counter(r["family"] for r in mine)),
                "per_task": per_task,
            }
        )
    return out


def _ci(value: float, ci, digits: int = 3, signed: bool = False) -> str:
    f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    return f"{f.format(value)} [{f.format(ci[0])}, {f.format(ci[1])}]"


def comparison_table(summaries: list[dict]) -> str:
    """Markdown: one row per policy; success rate and mean gains with 95% CIs."""
    lines = [
        "| policy | episodes | success rate [95% CI] | mean metric gain [95% CI] | "
        "mean accuracy gain [95% CI] | valid JSON |",
        "|---|---:|---|---|---|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['policy']} | {s['n']} | {_ci(s['success_rate'], s['success_ci'], 2)} | "
            f"{_ci(s['mean_metric_gain'], s['metric_gain_ci'], signed=True)} | "
            f"{_ci(s['mean_accuracy_gain'], s['accuracy_gain_ci'], signed=True)} | "
            f"{s['valid_rate']:.2f} |"
        )
    return "\n".join(lines)


def family_table(summaries: list[dict]) -> str:
    """Markdown: rows of policies, columns of tasks, cells = family choice counts."""
    tasks = list(dict.fromkeys(t for s in summaries for t in s["per_task"]))
    lines = ["| policy | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for s in summaries:
        cells = []
        for task in tasks:
            fams = s["per_task"].get(task, {}).get("families", {})
            cells.append(", ".join(f"{f} {fams[f]}" for f in _families_sorted(fams)) or "-")
        lines.append(f"| {s['policy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _families_sorted(fams: dict) -> list[str]:
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return sorted(fams, key=lambda f: rank.get(f, len(rank)))


FAMILY_COLORS = {**{f.name: f.color for f in FAMILIES}, "invalid": "#999999"}


def family_share_bars(ax, labels: list[str], counts: list[dict], fontsize: int = 8) -> None:
    """Horizontal stacked bars on ``ax``: per label, the share of each family in its counts."""
    y = np.arange(len(labels))
    left = np.zeros(len(labels))
    for fam in FAMILY_ORDER:
        share = np.array([c.get(fam, 0) / max(sum(c.values()), 1) for c in counts])
        ax.barh(y, share, left=left, color=FAMILY_COLORS[fam], label=fam)
        left += share
    ax.set_yticks(y, labels, fontsize=fontsize)
    ax.invert_yaxis()
    ax.set_xlabel("family chosen (share of episodes)")
    ax.set_xlim(0, 1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=fontsize)


def comparison_plot(summaries: list[dict], path: str | Path, title: str = "Held-out tasks") -> Path:
    """PNG: success rate and mean accuracy gain per policy (95% CI bars), and the share of each
    strategy family per policy and task (stacked bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["policy"] for s in summaries]
    y = np.arange(len(names))
    pairs = [(s, t) for s in summaries for t in s["per_task"]]
    fig, axes = plt.subplots(
        1,
        3,
        figsize=(15, max(3.0, 0.45 * max(len(names), len(pairs) * 0.6) + 1.5)),
        gridspec_kw={"width_ratios": [1, 1, 1.3]},
    )
    for ax, key, ci, label in (
        (axes[0], "success_rate", "success_ci", "success rate (validation gain > 0)"),
        (axes[1], "mean_accuracy_gain", "accuracy_gain_ci", "mean accuracy gain"),
    ):
        values = np.array([s[key] for s in summaries])
        lo = values - np.array([s[ci][0] for s in summaries])
        hi = np.array([s[ci][1] for s in summaries]) - values
        ax.barh(y, values, xerr=[lo, hi], color="#4c72b1", capsize=3)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel(label + " (95% CI)")
        ax.axvline(0, color="black", linewidth=0.8)
    axes[0].set_xlim(0, 1)
    axes[1].set_yticklabels([])
    family_share_bars(
        axes[2],
        [f"{s['policy']} | {t}" for s, t in pairs],
        [s["per_task"][t]["families"] for s, t in pairs],
        fontsize=7,
    )
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(rows: list[dict]) -> str:
    """Both markdown tables for a set of rows."""
    summaries = summarize(rows)
    return comparison_table(summaries) + "\n\nFamily choice per held-out task:\n\n" + family_table(summaries)


def env_factory(
    preset: str,
    artifacts: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    workers: int = 1,
    ray_address: str | None = None,
    **kwargs,
) -> Callable[[list[str]], Any]:
    """``(tasks, **env kwargs) -> Coral-v0 env`` with these settings (envs share one runtime per
    process); ``seed`` is the strategies' sampling seed, never the split seed. The trainers build
    their held-out env with ``strict_heldout=True``. With ``workers > 1`` (or a ``ray_address``)
    it returns an ``EpisodePool`` of that many Ray actors instead, one per factory, shared by the
    training and held-out envs (each with its own env arguments)."""

    pools = []

    def make(tasks: list[str], **extra):
        if workers > 1 or ray_address:
            from coral_env.env.ray_pool import EpisodePool

            if not pools:
                env_kwargs = dict(preset=preset, artifacts=artifacts, data_dir=data_dir, seed=seed, **kwargs)
                pools.append(EpisodePool(env_kwargs, workers=workers, address=ray_address))
            return pools[0].with_env_kwargs(**extra)
        import gymnasium as gym

        import coral_env  # noqa: F401  (registers Coral-v0)

        return gym.make(
            "Coral-v0",
            task=task_arguments(tasks),
            preset=preset,
            artifacts=artifacts,
            data_dir=data_dir,
            seed=seed,
            **(kwargs | extra),
        )

    return make


def task_arguments(tasks: list[str]) -> list[str]:
    """Task names, with a user task registered from a config file named by that file again, so
    a worker process (async vector env, Ray actor) registers it too."""
    from coral_env.tasks import registered_task_files

    files = registered_task_files()
    return [files.get(t, t) for t in tasks]
