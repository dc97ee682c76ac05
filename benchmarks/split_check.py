"""Model-free check of the split contract: row ids (and question texts) disjoint across train /
support / validation / test for every task with data, at each preset's sizes and split seeds 0
and 1, plus the fingerprint each stage would record.

    python benchmarks/split_check.py [--data-dir DIR] [--out benchmarks/split_check.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

from coral_env.tasks import (
    PRESET_SPLIT_SIZES,
    DataDirNotFoundError,
    TaskDataNotFoundError,
    list_tasks,
    load_task,
    normalize_text,
    split_fingerprint,
)

SPLITS = ("train", "support", "validation", "test")


def check(task: str, preset: str, seed: int, data_dir: str | None) -> dict:
    sizes = PRESET_SPLIT_SIZES[preset]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_task(task, data_dir, seed=seed, sizes=sizes)
    ids = {s: [ex.uid for ex in splits.split(s)] for s in SPLITS}
    texts = {s: {normalize_text(ex.question) for ex in splits.split(s)} for s in SPLITS}
    overlaps = [
        f"{a}/{b}"
        for i, a in enumerate(SPLITS)
        for b in SPLITS[i + 1 :]
        if set(ids[a]) & set(ids[b]) or texts[a] & texts[b]
    ]
    duplicated = [s for s in SPLITS if len(set(ids[s])) != len(ids[s])]
    return {
        "task": task,
        "preset": preset,
        "seed": seed,
        "counts": [len(ids[s]) for s in SPLITS],
        "overlaps": overlaps + [f"{s} repeats ids" for s in duplicated],
        "test_hash": split_fingerprint(splits, seed, sizes)["row_ids"]["test"],
        "shrunk": bool(caught),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(Path(__file__).with_name("split_check.md")))
    args = p.parse_args()
    start = time.perf_counter()
    rows, missing = [], []
    for task in list_tasks():
        try:
            load_task(task, args.data_dir)
        except (TaskDataNotFoundError, DataDirNotFoundError):
            missing.append(task)
            continue
        for preset in PRESET_SPLIT_SIZES:
            for seed in (0, 1):
                rows.append(check(task, preset, seed, args.data_dir))
                print(rows[-1], file=sys.stderr, flush=True)
    bad = [r for r in rows if r["overlaps"]]
    lines = [
        "# Split contract check",
        "",
        f"`python benchmarks/split_check.py {' '.join(sys.argv[1:])}` on {platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}, "
        f"{time.perf_counter() - start:.0f} s, no model. For every task with data, each preset's sizes "
        "(`coral_env.tasks.PRESET_SPLIT_SIZES`) and split seeds 0 and 1: rows per split and whether any "
        "two splits share a row id or a normalised question text.",
        "",
        f"**{len(rows)} task x preset x seed combinations, {len(bad)} with an overlap.**"
        + (f" Tasks without local data (skipped): {', '.join(missing)}." if missing else ""),
        "",
        "| task | preset | seed | train | support | validation | test | overlaps | test row-id hash |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        counts = " | ".join(str(c) for c in r["counts"])
        note = ", ".join(r["overlaps"]) or "none"
        lines.append(
            f"| {r['task']} | {r['preset']} | {r['seed']} | {counts} | {note}"
            f"{' (sizes shrunk: too few rows)' if r['shrunk'] else ''} | `{r['test_hash']}` |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
