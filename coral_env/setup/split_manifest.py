"""The split contract: every stage splits a task the same way, and the artifacts say how.

The first stage that uses a task (collection, generator or CVAE data, the env, a benchmark)
records its split fingerprint (split seed, sizes, a hash of the row ids of each split) in
``<artifacts>/<preset>/splits.json``; every later stage, the env and ``coral eval`` compare
theirs with it. A mismatch means a row one stage trained on may be another stage's
validation or test row, so it is an error that names the manifest and the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..backend.io import atomic_write_json
from ..tasks import TaskSplits, load_task, preset_split_sizes, split_fingerprint
from .artifacts import ArtifactPaths

MANIFEST = "splits.json"


class SplitContractError(ValueError):
    """A task's splits differ from the ones recorded with the artifacts."""


def manifest_path(paths: ArtifactPaths) -> Path:
    return paths.base / MANIFEST


def _read(path: Path) -> dict:
    if not path.exists():
        return {}
    return json.loads(path.read_text()).get("tasks", {})


def _differences(recorded: dict, now: dict) -> list[str]:
    out = []
    if recorded["split_seed"] != now["split_seed"]:
        out.append(f"split seed {recorded['split_seed']} recorded, {now['split_seed']} now")
    if recorded["sizes"] != now["sizes"]:
        out.append(f"sizes {recorded['sizes']} recorded, {now['sizes']} now")
    changed = [s for s in now["row_ids"] if recorded["row_ids"].get(s) != now["row_ids"][s]]
    if changed and not out:
        out.append(f"the rows of {', '.join(changed)} differ (the task's data changed)")
    return out


def check_splits(
    paths: ArtifactPaths, task: str, splits: TaskSplits, split_seed: int, *, record: bool = True, stage: str = ""
) -> None:
    """Compare ``splits`` with the manifest entry of ``task``; record it if there is none.

    Raises ``SplitContractError`` naming the manifest, what differs and the fix. With
    ``record=False`` (read-only users such as ``coral eval``) a missing entry is accepted.
    """
    sizes = preset_split_sizes(paths.preset)
    now = split_fingerprint(splits, split_seed, sizes)
    path = manifest_path(paths)
    recorded = _read(path).get(task)
    if recorded is not None:
        problems = _differences(recorded, now)
        if problems:
            by = f" by {recorded.get('stage')}" if recorded.get("stage") else ""
            seed = recorded["split_seed"]
            raise SplitContractError(
                f"task {task!r}{f' ({stage})' if stage else ''}: splits differ from the ones recorded{by} in "
                f"{path}: {'; '.join(problems)}. Rows trained on there could be validation or test rows "
                f"here. Fix: use split seed {seed} (the artifacts' one: `--split-seed {seed}` on coral "
                f"setup/collect/pretrain-*/eval/generate, `split_seed={seed}` in gym.make; the trainers and "
                f"benchmarks other than eval_bench split with seed 0), or a fresh --artifacts folder (or "
                f"delete {paths.base}) and rerun `coral setup --preset {paths.preset} --split-seed {split_seed}`"
            )
        return
    if not record:
        return
    entries = _read(path)  # re-read: another stage may have written meanwhile
    entries[task] = now | {"stage": stage}
    atomic_write_json(path, {"preset": paths.preset, "tasks": dict(sorted(entries.items()))})


def contract_splits(
    paths: ArtifactPaths,
    task: str,
    data_dir: str | os.PathLike[str] | None = None,
    split_seed: int = 0,
    *,
    record: bool = True,
    stage: str = "",
) -> TaskSplits:
    """``task`` split with the preset's sizes and ``split_seed``, checked against (and, the
    first time, recorded in) the artifacts' split manifest."""
    splits = load_task(task, data_dir, seed=split_seed, sizes=preset_split_sizes(paths.preset))
    check_splits(paths, splits.name, splits, split_seed, record=record, stage=stage)
    return splits


__all__ = ["MANIFEST", "SplitContractError", "check_splits", "contract_splits", "manifest_path"]
