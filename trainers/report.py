"""``coral report``: the papers' Table 2 layout and figures from a run folder.

A run folder (``coral demo --out DIR`` writes one) holds two JSONL files:

* ``methods.jsonl``: one row per (method, task) test result:
  ``{"method", "label", "task", "accuracy", "n", "ci95": [lo, hi]}``, and ``gain``/``gain_ci``
  (over the env's starting adapter, paired) where the method has one (more keys are kept);
* ``episodes.jsonl``: environment episodes of the policies (``trainers.evaluation`` rows), for
  the learning curve and the strategy-choice figure.

``write_report`` turns them into ``report.md``, which opens with its figures:
``agent_contribution.png`` (base -> mean adapter -> generator -> +alignment -> +policy per
task), ``learning_curve.png`` (ReST^EM's held-out success rate and test gain per iteration) and
``strategy_choice.png`` (family chosen per policy and task); then the tables (methods x tasks,
in-domain / out-of-domain / synthetic averages, 95% CIs; the test gain over the starting
adapter with paired CIs).

Averages are the mean of the task accuracies; their 95% CI is the normal interval with the
per-task binomial variances added (tasks are independent samples).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

METHODS_FILE = "methods.jsonl"
EPISODES_FILE = "episodes.jsonl"

# Row order of the table (ReST^EM's iterations go where "restem" stands); methods not listed
# here follow in first-seen order.
METHOD_ORDER = (
    "base",
    "mean_adapter",
    "coral_generator",
    "coral_aligned",
    "coral_policy_oracle",
    "coral_policy_random",
    "coral_policy_fixed_rule",
    "coral_policy_zero_shot",
    "restem",
    "coral_policy_ppo",
    "coral_policy_closed_loop",
    "no_meta_lora",
    "union_lora",
    "maml_fo",
    "abmll_fo",
)
# The agent-contribution chain; the policy step is the last ReST^EM iteration when present.
CHAIN = ("base", "mean_adapter", "coral_generator", "coral_aligned")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def task_group(task: str) -> str:
    """``in-domain``, ``out-of-domain`` or ``synthetic`` (built-in syn_* and ctl_* tasks, the
    policy controls included; user tasks count as out-of-domain)."""
    from coral_env.tasks import CONTROL_TASKS, IN_DOMAIN, SYNTHETIC_TASKS
    from coral_env.tasks.policy_controls import POLICY_CONTROL_TASKS

    if task in IN_DOMAIN:
        return "in-domain"
    built_in = {spec.name for spec in (*SYNTHETIC_TASKS, *CONTROL_TASKS, *POLICY_CONTROL_TASKS)}
    return "synthetic" if task in built_in else "out-of-domain"


def _ordered_methods(rows: list[dict]) -> list[str]:
    seen = list(dict.fromkeys(r["method"] for r in rows))

    def key(method: str) -> tuple:
        if method.startswith("coral_policy_restem"):
            return (METHOD_ORDER.index("restem"), _iteration(method))
        return (METHOD_ORDER.index(method), 0) if method in METHOD_ORDER else (len(METHOD_ORDER), seen.index(method))

    return sorted(seen, key=key)


def _iteration(method: str) -> int:
    tail = method.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def group_average(cells: list[dict]) -> tuple[float, float] | None:
    """(mean accuracy, 95% half-width) over tasks; None when empty."""
    if not cells:
        return None
    acc = np.array([c["accuracy"] for c in cells], dtype=float)
    var = sum(c["accuracy"] * (1 - c["accuracy"]) / max(c["n"], 1) for c in cells) / len(cells) ** 2
    return float(acc.mean()), 1.96 * math.sqrt(var)


def table(rows: list[dict]) -> str:
    """Markdown Table 2: methods x tasks (accuracy in %, 95% CI), then per-group averages."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    groups = ("in-domain", "out-of-domain", "synthetic")
    tasks.sort(key=lambda t: groups.index(task_group(t)))
    present = [g for g in groups if any(task_group(t) == g for t in tasks)]
    header = ["method"] + [f"{t}" for t in tasks] + [f"{g} avg" for g in present]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    cell = {(r["method"], r["task"]): r for r in rows}
    for method in _ordered_methods(rows):
        label = next(r.get("label", method) for r in rows if r["method"] == method)
        parts = [label]
        for task in tasks:
            r = cell.get((method, task))
            if r is None:
                parts.append("-")
            else:
                lo, hi = r.get("ci95", (r["accuracy"], r["accuracy"]))
                parts.append(f"{100 * r['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
        for g in present:
            mine = [cell[(method, t)] for t in tasks if task_group(t) == g and (method, t) in cell]
            avg = group_average(mine) if len(mine) == sum(task_group(t) == g for t in tasks) else None
            parts.append("-" if avg is None else f"{100 * avg[0]:.1f} ± {100 * avg[1]:.1f}")
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines)


def gain_table(rows: list[dict]) -> str | None:
    """Markdown: methods x tasks, test gain over the env's starting adapter in points with its
    paired 95% CI (None when no row has a gain)."""
    rows = [r for r in rows if "gain" in r]
    if not rows:
        return None
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lines = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    cell = {(r["method"], r["task"]): r for r in rows}
    for method in _ordered_methods(rows):
        label = next(r.get("label", method) for r in rows if r["method"] == method)
        parts = [label]
        for task in tasks:
            r = cell.get((method, task))
            if r is None:
                parts.append("-")
                continue
            lo, hi = r["gain_ci"]
            mark = "*" if lo > 0 or hi < 0 else ""
            parts.append(f"{100 * r['gain']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{mark}")
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines)


def learning_curve(episodes: list[dict], path: Path, references: tuple[str, ...] = ("random", "oracle")) -> Path | None:
    """ReST^EM on the held-out tasks per iteration (0 = the zero-shot policy): success rate (the
    validation metric rose; Wilson 95% CI) and test gain over the starting adapter (two-level
    paired bootstrap 95% CI), with other policies' gains as horizontal references."""
    import matplotlib

    from coral_env.backend.metrics import wilson_ci

    from .paired import policy_test_gain

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["zero_shot"] + sorted(
        {e["policy"] for e in episodes if e["policy"].startswith("restem_iter")}, key=lambda p: int(p[11:])
    )
    names = [n for n in names if any(e["policy"] == n for e in episodes)]
    if len(names) < 2:
        return None
    x = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    success, gains = [], []
    for name in names:
        mine = [e for e in episodes if e["policy"] == name]
        k = sum(bool(e["success"]) for e in mine)
        success.append((k / len(mine), *wilson_ci(k, len(mine))))
        g = policy_test_gain(episodes, name) if any(e.get("test_correct") for e in mine) else None
        gains.append((g["gain"], *g["ci"]) if g else (np.nan, np.nan, np.nan))
    for ax, values, ylabel in ((left, success, "held-out success rate"), (right, gains, "held-out test gain")):
        mid = np.array([v[0] for v in values])
        err = np.array([[v[0] - v[1] for v in values], [v[2] - v[0] for v in values]])
        ax.errorbar(x, mid, yerr=err, marker="o", capsize=3, color="#c44e52", label="ReST^EM")
        ax.set_xticks(x, ["zero-shot"] + [f"iter {n[11:]}" for n in names[1:]])
        ax.set_ylabel(f"{ylabel} (95% CI)")
    for ref, style in zip(references, ("--", ":")):
        if any(e["policy"] == ref and e.get("test_correct") for e in episodes):
            right.axhline(policy_test_gain(episodes, ref)["gain"], ls=style, color="#555555", label=ref)
    right.axhline(0, color="#bbbbbb", lw=0.8)
    right.legend(fontsize=8)
    fig.suptitle("ReST^EM learning curve on the held-out tasks", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _policy_step(rows: list[dict]) -> str | None:
    """The method whose accuracy is the chain's +policy step: the last ReST^EM iteration, else
    the zero-shot policy."""
    methods = _ordered_methods(rows)
    restem = [m for m in methods if m.startswith("coral_policy_restem")]
    if restem:
        return restem[-1]
    return "coral_policy_zero_shot" if "coral_policy_zero_shot" in methods else None


def contribution_plot(rows: list[dict], path: Path) -> Path:
    """Grouped bars per task (and their average): base, generator, +alignment, +policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chain = [m for m in CHAIN if any(r["method"] == m for r in rows)]
    policy = _policy_step(rows)
    if policy:
        chain.append(policy)
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["method"] in chain))
    cell = {(r["method"], r["task"]): r for r in rows}
    labels = {m: next(r.get("label", m) for r in rows if r["method"] == m) for m in chain}
    x = np.arange(len(tasks) + 1)
    width = 0.8 / max(len(chain), 1)
    fig, ax = plt.subplots(figsize=(max(9.0, 1.3 * len(x) + 5), 4.2))
    colors = ["#8c8c8c", "#4c72b0", "#55a868", "#c44e52", "#8172b3"]
    for i, method in enumerate(chain):
        vals, errs = [], [[], []]
        for task in tasks:
            r = cell.get((method, task))
            acc = r["accuracy"] if r else np.nan
            lo, hi = r.get("ci95", (acc, acc)) if r else (np.nan, np.nan)
            vals.append(acc)
            errs[0].append(acc - lo)
            errs[1].append(hi - acc)
        mine = [cell[(method, t)] for t in tasks if (method, t) in cell]
        avg = group_average(mine) if len(mine) == len(tasks) else None
        vals.append(avg[0] if avg else np.nan)
        errs[0].append(avg[1] if avg else 0)
        errs[1].append(avg[1] if avg else 0)
        ax.bar(
            x + (i - (len(chain) - 1) / 2) * width,
            vals,
            width,
            yerr=errs,
            capsize=2,
            label=labels[method],
            color=colors[i % len(colors)],
        )
    ax.set_xticks(x, tasks + ["average"], rotation=20)
    ax.set_ylabel("test accuracy (95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title("Agent contribution: base -> (mean adapter) -> generator -> +alignment -> +policy", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def choice_plot(episodes: list[dict], path: Path) -> Path:
    """Stacked bars: share of each strategy family per (policy, task)."""
    import matplotlib

    from .evaluation import family_share_bars

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys((e["policy"], e["task"]) for e in episodes))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(pairs) + 1.5))
    counts = [Counter(e["family"] for e in episodes if (e["policy"], e["task"]) == p) for p in pairs]
    family_share_bars(ax, [f"{p} | {t}" for p, t in pairs], counts)
    ax.set_title("Strategy choice per task")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    run_dir: str | Path, out: str | Path | None = None, title: str = "Coral results", notes: list[str] | None = None
) -> Path:
    """Write ``report.md`` and its PNGs (agent contribution; with episodes, the ReST^EM learning
    curve and the strategy choice) into ``out`` (default: the run folder); returns the md."""
    from coral_env.backend.io import atomic_write_text

    from .evaluation import family_table, summarize

    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / METHODS_FILE)
    if not rows:
        raise FileNotFoundError(
            f"no results in {run_dir / METHODS_FILE}; run `coral demo --out {run_dir}` (or point --run at "
            f"a folder that a demo run wrote)"
        )
    episodes = read_jsonl(run_dir / EPISODES_FILE)
    out = Path(out) if out else run_dir
    figures = [("agent contribution", contribution_plot(rows, out / "agent_contribution.png"))]
    if episodes:
        figures.append(("ReST^EM learning curve", learning_curve(episodes, out / "learning_curve.png")))
        figures.append(("strategy choice", choice_plot(episodes, out / "strategy_choice.png")))
    parts = [f"# {title}", ""]
    meta_path = run_dir / "run.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        notes = notes if notes is not None else meta.get("notes")
        parts += [
            f"Run: `{meta.get('command', '')}` ({meta.get('machine', '')}; "
            f"{meta.get('minutes', '?')} min; {meta.get('date', '')}).",
            "",
        ]
    parts += [f"![{name}]({path.name})" for name, path in figures if path is not None] + [""]
    parts += [
        "## Test accuracy",
        "",
        "Test accuracy in %, 95% CI in brackets (Wilson for a task; for an average, the normal "
        "interval of the mean of task accuracies). Leave-one-out: every method was trained "
        "without the task it is scored on.",
        "",
        table(rows),
        "",
    ]
    if gains := gain_table(rows):
        parts += [
            "## Test gain over the starting adapter",
            "",
            "Points over the env's starting adapter (generated + aligned) on the same test questions, "
            "paired 95% CI; `*` marks a CI that excludes 0.",
            "",
            gains,
            "",
        ]
    if episodes:
        parts += ["## Strategy choice per task (held-out episodes)", "", family_table(summarize(episodes)), ""]
    if notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md = out / "report.md"
    atomic_write_text(md, "\n".join(parts))
    return md


@dataclass
class ReportArgs:
    """Settings of ``coral report``."""

    run: str = field(default="runs/demo", metadata={"help": "run folder"})
    out: str | None = field(default=None, metadata={"help": "where to write the report (default: the run folder)"})
    title: str = field(default="Coral results", metadata={"help": "report title"})


def command(args: ReportArgs) -> int:
    """``coral report``: write the report and print it."""
    report = write_report(args.run, args.out, title=args.title)
    print(report.read_text())
    print(f"report: {report}")
    return 0


__all__ = [
    "METHODS_FILE",
    "EPISODES_FILE",
    "ReportArgs",
    "command",
    "table",
    "task_group",
    "group_average",
    "gain_table",
    "contribution_plot",
    "learning_curve",
    "choice_plot",
    "write_report",
    "read_jsonl",
]
