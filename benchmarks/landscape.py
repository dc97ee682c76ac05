"""The strategy landscape: where does each adaptation strategy change what the model answers?

Per (task, strategy) cell, starting from the environment's own starting adapter (generated
from the task's support prompts and aligned by the CVAE, both trained without the task: the
runtime is asked for strict held-out artifacts), the strategy is run on the validation and the
test split. A cell row holds the metric before/after, the paired change with a paired-bootstrap
95% CI, the McNemar p-value of the validation improvement, the rewards ``binary`` and
``significant`` would pay, the share of predictions flipped, the seconds, and the per-question
correctness (so every summary can be recomputed, e.g. at smaller validation sizes).

Per task the report gives the base model's metric (zero adapter), the starting adapter's, the
oracle (best validation change) with its test change and CI, the random policy's expected test
change (mean over the strategies), the share of validation-positive strategies that are also
test-positive, and the validation/test Spearman correlation. Over all cells: the false-reward
rate (rewarded on validation, test change <= 0) of ``binary`` and ``significant``, also at
validation prefixes of 50/100/200 questions. Generative tasks (decoded, slow) are scored on the
first ``--generative-limit`` questions of each split (default 50); the table's sizes say so.

Resumable: one JSONL row per cell (``<out>/cells.jsonl``); a killed run skips finished cells.
``run_cell`` is a plain function of (runtime, task, label, strategy): ``--workers N`` farms cells
out to N Ray actors, one runtime each (``--ray-address`` joins a cluster); the rows are the same.

    python benchmarks/landscape.py --preset cpu --artifacts artifacts --data-dir ../shared/datasets \\
        --tasks syn_parity,arc_easy --out benchmarks/landscape_run
    python benchmarks/landscape.py --report-only --out benchmarks/landscape_run   # tables, PNG, JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

NOOP = "noop"
FAMILY_ORDER = ("noop", "LORA", "Latent", "TTS", "TTL")
VAL_PREFIXES = (50, 100, 200)
LEVEL = 0.05


# ----- strategies -----------------------------------------------------------------------------


def label(strategy) -> str:
    """A short, unique, shell-friendly name: ``LORA:lambda=0.5``, ``TTS:m=4,method=sum_logprobs``."""
    from coral_env.strategies.values import fmt_number

    parts = []
    for key, value in strategy.canonical().items():
        if key == "family":
            continue
        key = {
            "num_prompt_batches": "m",
            "learning_rate": "lr",
            "ttl_steps": "steps",
            "batch_size": "bs",
            "shuffle_data": "shuffle",
            "slot_steps": "steps",
            "slot_lr": "lr",
        }.get(key, key)
        parts.append(f"{key}={fmt_number(value) if not isinstance(value, str) else value}")
    return f"{strategy.family}:{','.join(parts)}"


def default_strategies(max_prompt_batches: int | None = None) -> dict[str, object]:
    """The no-op (the starting adapter as is) and every entry of the discrete catalogue."""
    from coral_env.strategies.schema_views import catalogue

    out: dict[str, object] = {NOOP: None}
    for strategy in catalogue(max_prompt_batches):
        out[label(strategy)] = strategy
    return out


def select_strategies(names: list[str] | None, max_prompt_batches: int | None = None) -> dict[str, object]:
    """``names``: catalogue labels, ``noop`` or JSON strategies (probes outside the catalogue)."""
    from coral_env.strategies import StrategyValidationError, parse_strategy

    known = default_strategies(max_prompt_batches)
    if names is None:
        return known
    chosen: dict[str, object] = {}
    for name in names:
        if name in known:
            chosen[name] = known[name]
        elif name.lstrip().startswith("{"):
            try:
                strategy = parse_strategy(name).strategy
            except StrategyValidationError as exc:
                raise SystemExit(f"--strategies: {name!r} is not a valid strategy: {exc}") from None
            chosen[label(strategy)] = strategy
        else:
            raise SystemExit(
                f"--strategies: unknown strategy {name!r}. Fix: use `noop`, a JSON strategy, or one "
                f"of the catalogue labels: {', '.join(known)}"
            )
    return chosen


# ----- one cell -------------------------------------------------------------------------------


def _bits(correct) -> str:
    return "".join("1" if c else "0" for c in np.asarray(correct).astype(bool))


def _unbits(text: str) -> np.ndarray:
    return np.array([c == "1" for c in text], dtype=bool)


def paired_metric_ci(before, after, labels, metric: str, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Paired-bootstrap 95% CI of metric(after) - metric(before) over the same resampled questions;
    ``balanced_accuracy`` averages per-gold-class accuracy, anything else is plain accuracy."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    n = len(before)
    if n == 0:
        return (0.0, 0.0)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    if metric != "balanced_accuracy":
        diffs = (after[idx] - before[idx]).mean(axis=1)
    else:
        labels = np.asarray(labels)
        per_class = []
        for c in np.unique(labels):
            mask = (labels[idx] == c).astype(np.float64)
            count = np.maximum(mask.sum(axis=1), 1.0)
            per_class.append(((after[idx] - before[idx]) * mask).sum(axis=1) / count)
        diffs = np.mean(per_class, axis=0)
    return (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5)))


def split_limit(state, generative_limit: int | None) -> int | None:
    """Questions scored per split: all of them, or the first ``generative_limit`` of a generative task."""
    return generative_limit if generative_limit and state.splits.kind == "generative" else None


def run_cell(runtime, task: str, name: str, strategy, generative_limit: int | None = None) -> dict:
    """Evaluate one (task, strategy) cell on validation and test from the starting adapter
    (a generative task on the first ``generative_limit`` questions of each split)."""
    from coral_env.backend.metrics import mcnemar_improvement_pvalue

    state = runtime.task(task)
    limit = split_limit(state, generative_limit)
    row: dict = {
        "task": task,
        "strategy": name,
        "family": "noop" if strategy is None else strategy.family,
        "json": None if strategy is None else strategy.canonical_json(),
    }
    seconds = 0.0
    for split in ("validation", "test"):
        before, _ = runtime.evaluate(state, state.start_adapter, None, split=split, limit=limit)
        start = time.perf_counter()
        after, hit = (
            (before, True)
            if strategy is None
            else runtime.evaluate(state, state.start_adapter, strategy, split=split, limit=limit)
        )
        seconds += after.cost.get("seconds", time.perf_counter() - start) if strategy is not None else 0.0
        metric = "balanced_accuracy" if before.result.two_answer else "accuracy"
        b, a = before.result.correct, after.result.correct
        short = "val" if split == "validation" else "test"
        row |= {
            f"{short}_metric": metric,
            f"{short}_before": before.result.metric(metric),
            f"{short}_after": after.result.metric(metric),
            f"{short}_change": after.result.metric(metric) - before.result.metric(metric),
            f"{short}_acc_change": float(np.mean(a) - np.mean(b)),
            f"{short}_ci": list(paired_metric_ci(b, a, before.result.labels, metric)),
            f"{short}_flipped": float(
                np.mean(
                    np.array(before.result.predictions, dtype=object)
                    != np.array(after.result.predictions, dtype=object)
                )
            ),
            f"{short}_p": mcnemar_improvement_pvalue(b, a),
            f"{short}_correct_before": _bits(b),
            f"{short}_correct_after": _bits(a),
            f"{short}_n": len(b),
        }
        if strategy is not None and "adapter_diversity" in after.cost:
            row["adapter_diversity"] = after.cost["adapter_diversity"]
    row["reward_binary"] = int(row["val_change"] > 0)
    row["reward_significant"] = int(row["val_change"] > 0 and row["val_p"] < LEVEL)
    row["seconds"] = round(seconds, 2)
    return row


def task_reference(runtime, task: str, generative_limit: int | None = None) -> dict:
    """The base model (zero adapter) and the starting adapter on test, for the per-task table."""
    import torch

    state = runtime.task(task)
    limit = split_limit(state, generative_limit)
    out = {
        "task": task,
        "strategy": "__reference__",
        "source": state.source,
        "heldout": runtime.provenance(task)["heldout"],
    }
    for label_, adapter in (("base", torch.zeros_like(state.start_adapter)), ("start", state.start_adapter)):
        for split in ("validation", "test"):
            evaluation, _ = runtime.evaluate(state, adapter, None, split=split, limit=limit)
            metric = "balanced_accuracy" if evaluation.result.two_answer else "accuracy"
            out[f"{label_}_{'val' if split == 'validation' else 'test'}"] = evaluation.result.metric(metric)
    out["n_val"], out["n_test"] = (min(len(s), limit or len(s)) for s in (state.splits.validation, state.splits.test))
    out["kind"] = state.splits.kind
    return out


def prepare_process(threads: int | None, user_tasks: list[str]) -> None:
    """What the driver and every Ray actor set up before scoring: torch threads, the user tasks."""
    import torch

    from coral_env.tasks.user import register_user_task

    if threads:
        torch.set_num_threads(threads)
    for path in user_tasks:
        register_user_task(path, overwrite=True)


def score_cell(runtime, task: str, name: str, strategy, generative_limit: int | None) -> dict:
    """One row: the task's reference (``name == "__reference__"``) or a (task, strategy) cell."""
    runtime.contexts.setdefault(task, "(landscape: no context needed)")  # skip the context writer
    if name == "__reference__":
        return task_reference(runtime, task, generative_limit)
    return run_cell(runtime, task, name, strategy, generative_limit)


class CellWorker:
    """The body of one Ray actor (``--workers N``): its own runtime, whole cells scored on it.
    Cells share nothing but the starting adapter's evaluation, which each actor makes once."""

    def __init__(self, config_kwargs: dict, threads: int | None, user_tasks: list[str]) -> None:
        from coral_env.env.runtime import CoralRuntime, EnvConfig

        prepare_process(threads, user_tasks)
        self.runtime = CoralRuntime.get(EnvConfig(**config_kwargs))

    def cell(self, task: str, name: str, strategy, generative_limit: int | None) -> dict:
        return score_cell(self.runtime, task, name, strategy, generative_limit)


def scored_cells(todo: list[tuple[str, str]], strategies: dict, args, runtime, config_kwargs: dict):
    """Rows of ``todo`` as they finish: in this process, or on ``--workers`` Ray actors (a local
    Ray, or the cluster at ``--ray-address``), each cell sent to the next idle actor."""
    if args.workers <= 1 and not args.ray_address:
        for task, name in todo:
            yield score_cell(runtime, task, name, strategies.get(name), args.generative_limit)
        return
    from coral_env.env.ray_pool import init_ray

    threads = args.threads or 1
    ray = init_ray(args.ray_address, args.workers, threads)
    from ray import cloudpickle
    from ray.util import ActorPool

    if __name__ != "__main__":  # imported from a file path: the actors could not import it by name
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    actor = ray.remote(num_cpus=threads)(CellWorker)
    actors = [actor.remote(config_kwargs, threads, args.user_task) for _ in range(args.workers)]
    yield from ActorPool(actors).map_unordered(
        lambda a, item: a.cell.remote(item[0], item[1], strategies.get(item[1]), args.generative_limit), todo
    )
    for a in actors:
        ray.kill(a)


# ----- the run --------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict]:
    """Finished rows; a torn last line (a run killed mid-write) is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_row(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_tasks(names: list[str], data_dir: str | None) -> list[str]:
    """Canonical names; an unknown task or one without data is a SystemExit naming the fix."""
    from coral_env.tasks import get_task
    from coral_env.tasks.errors import DataDirNotFoundError, TaskDataNotFoundError, UnknownTaskError
    from coral_env.tasks.loading import load_examples

    out = []
    for name in names:
        try:
            spec = get_task(name)
        except UnknownTaskError as exc:
            raise SystemExit(f"--tasks: {exc.args[0] if exc.args else exc}") from None
        try:
            load_examples(spec, data_dir)
        except (DataDirNotFoundError, TaskDataNotFoundError) as exc:
            raise SystemExit(
                f"--tasks: task {spec.name!r} has no data: {exc}. Fix: pass --data-dir with its "
                f"JSONL files, or leave it out of --tasks"
            ) from None
        out.append(spec.name)
    return out


def run(args) -> Path:
    from tqdm.auto import tqdm

    from coral_env.env.runtime import CoralRuntime, EnvConfig

    prepare_process(args.threads, args.user_task)
    tasks = check_tasks(args.tasks.split(","), args.data_dir)
    strategies = select_strategies(args.strategies, args.max_prompt_batches)
    strategies |= select_strategies(args.extra) if args.extra else {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells_path = out / "cells.jsonl"
    runs = json.loads((out / "runs.json").read_text()) if (out / "runs.json").exists() else []
    runs.append(
        {
            "command": "python benchmarks/landscape.py " + " ".join(sys.argv[1:]),
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    )
    (out / "runs.json").write_text(json.dumps(runs, indent=2) + "\n")
    done = {(r["task"], r["strategy"]) for r in read_rows(cells_path)}
    config_kwargs = dict(preset=args.preset, artifacts=args.artifacts, data_dir=args.data_dir, seed=args.seed)
    runtime = CoralRuntime.get(EnvConfig(**config_kwargs))
    for task in tasks:
        if args.allow_seen:
            continue
        runtime.require_heldout(task)  # strict: the generator and CVAE never saw the task
    # strategy-major, cheapest families first: a run cut short still covers every task and family
    order = sorted(
        strategies, key=lambda n: FAMILY_ORDER.index("noop" if strategies[n] is None else strategies[n].family)
    )
    todo = [(t, n) for n in ["__reference__", *order] for t in tasks if (t, n) not in done]
    bar = tqdm(total=len(todo), desc="landscape cells", disable=args.no_progress)
    for row in scored_cells(todo, strategies, args, runtime, config_kwargs):
        bar.set_postfix_str(f"{row['task']} {row['strategy']}"[:60])
        row["preset"] = args.preset
        append_row(cells_path, row)
        bar.update()
    bar.close()
    write_report(out, args)
    return out


# ----- the report -----------------------------------------------------------------------------


def _spearman(x: list[float], y: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def summarize(rows: list[dict]) -> dict:
    """Per task summaries and the false-reward rates (the JSON summary's content)."""
    from coral_env.backend.metrics import mcnemar_improvement_pvalue

    cells = [r for r in rows if r["strategy"] != "__reference__"]
    refs = {r["task"]: r for r in rows if r["strategy"] == "__reference__"}
    tasks: dict[str, dict] = {}
    for task in dict.fromkeys(r["task"] for r in cells):
        mine = [r for r in cells if r["task"] == task and r["strategy"] != NOOP]
        if not mine:
            continue
        oracle = max(mine, key=lambda r: (r["val_change"], -r["seconds"]))
        val, test = [r["val_change"] for r in mine], [r["test_change"] for r in mine]
        positive = [r for r in mine if r["val_change"] > 0]
        tasks[task] = {
            "oracle": oracle["strategy"],
            "oracle_val_gain": oracle["val_change"],
            "oracle_test_gain": oracle["test_change"],
            "oracle_ci": oracle["test_ci"],
            "random_test_gain": float(np.mean(test)),
            "val_positive_share_test_positive": (
                sum(r["test_change"] > 0 for r in positive) / len(positive) if positive else None
            ),
            "val_test_spearman": _spearman(val, test),
            "signal": oracle["test_ci"][0] > 0 or oracle["test_ci"][1] < 0,
            "strategies": len(mine),
            "reference": refs.get(task),
        }
    false_rates: dict[str, dict] = {}
    for mode in ("binary", "significant"):
        for n in (*VAL_PREFIXES, None):
            rewarded = false = 0
            for r in cells:
                if r["strategy"] == NOOP:
                    continue
                b, a = _unbits(r["val_correct_before"]), _unbits(r["val_correct_after"])
                if n is not None:
                    if len(b) < n:
                        continue
                    b, a = b[:n], a[:n]
                gain = a.mean() - b.mean() if n is not None else r["val_change"]
                ok = gain > 0 and (mode == "binary" or mcnemar_improvement_pvalue(b, a) < LEVEL)
                rewarded += ok
                false += ok and r["test_change"] <= 0
            key = "full" if n is None else str(n)
            false_rates.setdefault(mode, {})[key] = {
                "rewarded": rewarded,
                "false": false,
                "rate": false / rewarded if rewarded else None,
            }
    return {"tasks": tasks, "false_rates": false_rates}


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def write_report(out: Path, args) -> None:
    rows = read_rows(out / "cells.jsonl")
    summary = summarize(rows)
    cells = [r for r in rows if r["strategy"] != "__reference__"]
    json_summary = {
        "tasks": {
            t: {
                "oracle_test_gain": s["oracle_test_gain"],
                "oracle_ci": s["oracle_ci"],
                "random_test_gain": s["random_test_gain"],
                "val_test_spearman": s["val_test_spearman"],
            }
            for t, s in summary["tasks"].items()
        },
        "false_reward_rate": {m: summary["false_rates"][m]["full"]["rate"] for m in ("binary", "significant")},
        "context_id_accuracy": _context_accuracy(args),
    }
    summary_path = Path(args.summary) if args.summary else out / "landscape_summary.json"
    summary_path.write_text(json.dumps(json_summary, indent=2) + "\n")
    heatmap(cells, Path(args.heatmap) if args.heatmap else out / "landscape.png")
    lines = [
        "# Strategy landscape",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other jobs. Runs (resumed from "
        f"`cells.jsonl`): "
        + "; ".join(f"`{r['command']}` ({r['started']})" for r in _runs(out))
        + ". Metric: balanced accuracy on two-answer "
        "tasks, accuracy otherwise. Changes are after - before on the same questions, with paired-bootstrap "
        "95% CIs; `*` marks a CI excluding 0.",
        "",
        "## Per task",
        "",
        "| task | n val / test | strategies | held out | base (test) | start (test) | no-op | oracle (val) "
        "| oracle test change [CI] | signal | random policy | val+ also test+ | val/test Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, s in summary["tasks"].items():
        ref = s["reference"] or {}
        share = s["val_positive_share_test_positive"]
        rho = s["val_test_spearman"]
        lines.append(
            f"| {task} | {ref.get('n_val', '?')} / {ref.get('n_test', '?')} | {s['strategies']} | "
            f"{ref.get('heldout', '?')} | "
            f"{ref.get('base_test', float('nan')):.3f} | {ref.get('start_test', float('nan')):.3f} | 0 (reference) | "
            f"{s['oracle']} ({s['oracle_val_gain']:+.3f}) | {s['oracle_test_gain']:+.3f} {_fmt_ci(s['oracle_ci'])} | "
            f"{'yes' if s['signal'] else 'no'} | {s['random_test_gain']:+.3f} | "
            f"{'-' if share is None else f'{share:.2f}'} | {'-' if rho is None else f'{rho:+.2f}'} |"
        )
    lines += [
        "",
        "## False rewards (rewarded on validation, test change <= 0)",
        "",
        "| validation questions | binary: false / rewarded | rate | significant (McNemar p < 0.05) | rate |",
        "|---|---|---|---|---|",
    ]
    for key in (*map(str, VAL_PREFIXES), "full"):
        b, s_ = summary["false_rates"]["binary"][key], summary["false_rates"]["significant"][key]
        rate = lambda d: "-" if d["rate"] is None else f"{d['rate']:.2f}"  # noqa: E731
        lines.append(
            f"| {key} | {b['false']} / {b['rewarded']} | {rate(b)} | {s_['false']} / {s_['rewarded']} | {rate(s_)} |"
        )
    lines += [
        "",
        "## Cells",
        "",
        "| task | strategy | val change [CI] | test change [CI] | flipped (test) | val p | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    from coral_env.strategies import paper_strategies

    paper = {label(s) for s in paper_strategies()}
    for r in cells:
        mark = lambda ci: "*" if ci[0] > 0 or ci[1] < 0 else ""  # noqa: E731
        lines.append(
            f"| {r['task']} | {r['strategy']}{' (paper)' if r['strategy'] in paper else ''} | "
            f"{r['val_change']:+.3f} {_fmt_ci(r['val_ci'])}{mark(r['val_ci'])} | "
            f"{r['test_change']:+.3f} {_fmt_ci(r['test_ci'])}{mark(r['test_ci'])} | {r['test_flipped']:.1%} | "
            f"{r['val_p']:.3f} | {r['seconds']:.1f} |"
        )
    lines += ["", "## Families that flip at least 5% of test predictions", ""]
    for family in ("TTL", "LORA", "TTS", "Latent"):
        hits = sorted({r["task"] for r in cells if r["family"] == family and r["test_flipped"] >= 0.05})
        lines.append(f"- {family}: {', '.join(hits) if hits else 'no task'}")
    (Path(args.markdown) if args.markdown else out / "landscape.md").write_text("\n".join(lines) + "\n")


def _runs(out: Path) -> list[dict]:
    path = out / "runs.json"
    return json.loads(path.read_text()) if path.exists() else []


def _context_accuracy(args) -> float | None:
    path = Path(args.context_id) if args.context_id else None
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text()).get("full context")


def heatmap(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in cells))
    names = list(dict.fromkeys(r["strategy"] for r in cells))
    grid = np.full((len(tasks), len(names)), np.nan)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), max(2.5, 0.5 * len(tasks) + 1.5)))
    for r in cells:
        i, j = tasks.index(r["task"]), names.index(r["strategy"])
        grid[i, j] = r["test_change"]
        if r["test_ci"][0] > 0 or r["test_ci"][1] < 0:
            ax.text(j, i, "*", ha="center", va="center", fontsize=10)
    bound = max(0.01, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.01)
    image = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    fig.colorbar(image, ax=ax, label="test change (* = 95% CI excludes 0)")
    ax.set_title("Strategy landscape: test change from the starting adapter")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--artifacts", default=None, help="artifacts root (default: $CORAL_ARTIFACTS or ~/.cache/coral)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tasks", default="syn_parity,arc_easy", help="comma-separated task names")
    p.add_argument(
        "--strategies",
        nargs="*",
        default=None,
        help="catalogue labels, `noop` or JSON strategies (default: noop + the whole catalogue)",
    )
    p.add_argument(
        "--extra",
        nargs="*",
        default=None,
        help="JSON strategies run besides the chosen ones (probes outside the catalogue)",
    )
    p.add_argument("--max-prompt-batches", type=int, default=None, help="drop TTS entries with more batches")
    p.add_argument(
        "--generative-limit",
        type=int,
        default=50,
        help="score a generative task on the first N validation and test questions (0: all; decoding is slow)",
    )
    p.add_argument("--user-task", action="append", default=[], help="a user task config JSON to register")
    p.add_argument(
        "--allow-seen", action="store_true", help="run on tasks the generator/CVAE were trained on (default: refuse)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (per Ray actor with --workers)")
    p.add_argument(
        "--workers", type=int, default=1, help='Ray actors scoring cells in parallel (needs pip install -e ".[ray]")'
    )
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: a local Ray)")
    p.add_argument("--out", default="runs/landscape")
    p.add_argument("--markdown", default=None, help="report path (default: <out>/landscape.md)")
    p.add_argument("--summary", default=None, help="JSON summary path (default: <out>/landscape_summary.json)")
    p.add_argument("--heatmap", default=None, help="PNG path (default: <out>/landscape.png)")
    p.add_argument("--context-id", default=None, help="context_id.json whose accuracy goes into the summary")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from <out>/cells.jsonl")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        write_report(Path(args.out), args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    from coral_env.config import run_guarded

    raise SystemExit(run_guarded("landscape.py", main))  # user errors: one line naming the fix, no traceback
