#!/usr/bin/env python
"""Coral-v0 throughput: one-step episodes per hour, per strategy family (benchmarks/env.md).

For each task, every chosen catalogue entry is run once as a one-step episode (reset, step) on
a fresh memo (``CoralRuntime.clear_memo``: no evaluation, generated TTS adapter or TTS score is
reused), so the seconds are what an isolated first visit to (task, strategy) costs; within a run
the TTS methods share their adapters, so later TTS entries cost less than this. The reward is
scored on the validation split (its first ``--validation-size`` questions when given, as
``Coral-v0``'s ``validation_size``); ``eval_test`` is off, as in training. Per family: episodes,
median and mean seconds, episodes per hour (3600 / mean). Rows go to ``<out>/episodes.jsonl``
(resumable); the table is printed and written to ``<out>/throughput.md``.

    python benchmarks/env_throughput.py --artifacts A --tasks arc_easy --data-dir ../shared/datasets
    python benchmarks/env_throughput.py --artifacts A --tasks gsm8k --validation-size 50 --per-family 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", required=True, help="artifacts root (coral setup --artifacts)")
    p.add_argument("--tasks", required=True, help="comma-separated tasks")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--validation-size", type=int, default=None, help="Coral-v0 validation_size (default: all)")
    p.add_argument("--per-family", type=int, default=None, help="first N catalogue entries of each family")
    p.add_argument("--max-prompt-batches", type=int, default=4, help="drop TTS entries with more batches")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/env_throughput"))
    return p.parse_args(argv)


def chosen_strategies(per_family: int | None, max_prompt_batches: int | None) -> list:
    """Catalogue entries, at most ``per_family`` of each family (in catalogue order)."""
    from coral_env.strategies import catalogue

    seen: dict[str, int] = {}
    chosen = []
    for strategy in catalogue(max_prompt_batches):
        seen[strategy.family] = seen.get(strategy.family, 0) + 1
        if per_family is None or seen[strategy.family] <= per_family:
            chosen.append(strategy)
    return chosen


def table(rows: list[dict]) -> str:
    """Markdown: per (task, family), episodes, median and mean seconds, episodes per hour."""
    lines = [
        "| task | validation questions | family | episodes | median s | mean s | episodes / hour |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    keys = dict.fromkeys((r["task"], r["family"]) for r in rows)
    for task, family in keys:
        mine = [r for r in rows if (r["task"], r["family"]) == (task, family)]
        seconds = [r["seconds"] for r in mine]
        mean = statistics.mean(seconds)
        lines.append(
            f"| {task} | {mine[0]['validation_questions']} | {family} | {len(mine)} | "
            f"{statistics.median(seconds):.1f} | {mean:.1f} | {3600 / mean:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    import gymnasium as gym
    import torch

    import coral_env  # noqa: F401  (registers Coral-v0)
    from coral_env.backend.io import append_jsonl, atomic_write_text

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "episodes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["task"], r["strategy"]) for r in rows}
    tasks = args.tasks.split(",")
    sized = {"validation_size": args.validation_size} if args.validation_size else {}
    where = dict(preset=args.preset, artifacts=args.artifacts, data_dir=args.data_dir)
    env = gym.make("Coral-v0", task=tasks, **where, **sized)
    runtime = env.unwrapped.runtime
    for task in tasks:
        start = time.perf_counter()
        _, info = env.reset(seed=0, options={"task": task})
        print(f"{task}: first reset {time.perf_counter() - start:.1f} s", flush=True)
        for strategy in chosen_strategies(args.per_family, args.max_prompt_batches):
            action = strategy.to_json()
            if (task, strategy.canonical_json()) in done:
                continue
            runtime.clear_memo()  # a first visit: nothing served from the memo or the TTS caches
            env.reset(options={"task": task})
            start = time.perf_counter()
            _, _, _, _, step = env.step(action)
            row = {
                "task": task,
                "family": strategy.family,
                "strategy": strategy.canonical_json(),
                "seconds": time.perf_counter() - start,
                "validation_questions": info["validation_questions"],
                "memo_hit": step["memo_hit"],
            }
            append_jsonl(path, row)
            rows.append(row)
            print(f"  {action}: {row['seconds']:.1f} s", flush=True)
    text = "\n".join(
        [
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{args.threads} threads; {time.strftime('%Y-%m-%d')}.",
            "",
            table(rows),
            "",
        ]
    )
    atomic_write_text(args.out / "throughput.md", text)
    print(text)


if __name__ == "__main__":
    main()
