"""Finding the data folder and reading a task's rows (local JSONL, built-in generator, or Hub).

Offline is the default: the Hub is only contacted when a caller passes ``source="hub"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from coral_env.tasks.base import Example
from coral_env.tasks.errors import (
    DataDirNotFoundError,
    MalformedRowError,
    RowError,
    TaskDataNotFoundError,
)
from coral_env.tasks.registry import SPLIT_NAMES, TaskSpec, get_task

Source = Literal["local", "hub"]
ENV_VAR = "CORAL_DATA_DIR"
# <repository root>/../shared/datasets: the layout of this project's workspace.
_REPO_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"

_ROW_CACHE: dict[tuple[str, int, int], list[tuple[int, dict[str, Any]]]] = {}
_EXAMPLE_CACHE: dict[tuple[Any, ...], Any] = {}


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding one sub-folder of JSONL files per task.

    Order: the explicit argument, then ``$CORAL_DATA_DIR`` (either one, when given, is the only
    place looked at), then ``../shared/datasets`` relative to the working directory, then
    relative to the repository root. Raises ``DataDirNotFoundError`` listing every path tried.
    """
    if data_dir is not None:
        candidates = [("data_dir argument", Path(data_dir).expanduser())]
    elif os.environ.get(ENV_VAR):
        candidates = [(f"${ENV_VAR}", Path(os.environ[ENV_VAR]).expanduser())]
    else:
        from_cwd = Path.cwd().parent / "shared" / "datasets"
        candidates = [
            ("../shared/datasets from the working directory", from_cwd),
            ("../shared/datasets from the repository root", _REPO_DATA_DIR),
        ]
    for _, path in candidates:
        if path.is_dir():
            return path.resolve()
    raise DataDirNotFoundError(candidates)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file (blank lines skipped); see ``read_jsonl_lines``."""
    return [row for _, row in read_jsonl_lines(path)]


def read_jsonl_lines(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line number, row) pairs of a JSON Lines file, cached per (path, mtime, size).

    A line that is not valid UTF-8 JSON, or not a JSON object, raises ``MalformedRowError``
    naming the file and its line number. Callers must not mutate the returned rows.
    """
    file = Path(path)
    stat = file.stat()
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _ROW_CACHE:
        return _ROW_CACHE[key]
    rows: list[tuple[int, dict[str, Any]]] = []
    with file.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                problem = f"not UTF-8 text ({exc.reason})"
                raise MalformedRowError(str(file), lineno, problem) from None
            except json.JSONDecodeError as exc:
                problem = f"bad JSON: {exc.msg} at column {exc.colno}"
                raise MalformedRowError(str(file), lineno, problem) from None
            if not isinstance(row, dict):
                raise MalformedRowError(str(file), lineno, f"expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row))
    _ROW_CACHE[key] = rows
    return rows


def _convert_all(
    spec: TaskSpec, rows: Sequence[tuple[int, Mapping[str, Any]]], split: str, source: str
) -> list[Example]:
    """Converted rows; a failure names ``source`` and the row's line (or 1-based index)."""
    examples = []
    for index, (line, row) in enumerate(rows):
        try:
            examples.append(spec.convert(row, f"{split}-{index}"))
        except (RowError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise MalformedRowError(source, line, f"task {spec.name!r}: {exc}") from None
    return examples


def _local_file_examples(spec: TaskSpec, split: str, path: Path) -> list[Example]:
    stat = path.stat()
    key = ("file", str(path.resolve()), stat.st_mtime_ns, stat.st_size, spec.name, spec.convert)
    if key not in _EXAMPLE_CACHE:
        _EXAMPLE_CACHE[key] = _convert_all(spec, read_jsonl_lines(path), split, str(path))
    return _EXAMPLE_CACHE[key]


def local_task_files(spec: TaskSpec, data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The split files present for a task: its explicit ``files``, else
    ``<data dir>/<local_dir>/{train,validation,test}.jsonl``; raises if there are none."""
    if spec.files:
        files = {split: Path(p) for split, p in spec.files}
        missing = [p for p in files.values() if not p.is_file()]
        if missing:
            raise TaskDataNotFoundError(spec.name, missing, spec.hf_id, spec.schema)
        return files
    folder = resolve_data_dir(data_dir) / (spec.local_dir or spec.name)
    files = {s: folder / f"{s}.jsonl" for s in SPLIT_NAMES if (folder / f"{s}.jsonl").is_file()}
    if not files:
        expected = [folder / f"{s}.jsonl" for s in (spec.local_splits or SPLIT_NAMES)]
        raise TaskDataNotFoundError(spec.name, expected, spec.hf_id, spec.schema)
    return files


def _hub_examples(spec: TaskSpec, split: str) -> list[Example]:
    key = ("hub", spec.hf_id, spec.hf_config, split, spec.name, spec.convert)
    if key in _EXAMPLE_CACHE:
        return _EXAMPLE_CACHE[key]
    import datasets  # lazy: only the Hub path needs it

    dataset = datasets.load_dataset(spec.hf_id, spec.hf_config, split=split)
    where = f"hub:{spec.hf_id}" + (f"[{spec.hf_config}]" if spec.hf_config else "") + f"/{split}"
    _EXAMPLE_CACHE[key] = _convert_all(spec, list(enumerate(dataset, start=1)), split, where)
    return _EXAMPLE_CACHE[key]


def load_examples(
    task: str | TaskSpec,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    source: Source = "local",
) -> dict[str, list[Example]]:
    """All converted examples of a task, by source split ("train", "validation", "test").

    Built-in (synthetic) tasks ignore ``data_dir`` and ``source``; user tasks read their own
    files; benchmark tasks read the data folder, or the Hub when ``source="hub"``. The lists
    are shared with an in-process cache: copy before mutating.
    """
    spec = get_task(task)
    if spec.generate is not None:
        key = ("generated", spec.name, spec.generate, spec.convert)
        if key not in _EXAMPLE_CACHE:
            pools = spec.generate()
            _EXAMPLE_CACHE[key] = {
                split: _convert_all(spec, list(enumerate(rows, start=1)), split, f"generator of {spec.name}")
                for split, rows in pools.items()
            }
        return dict(_EXAMPLE_CACHE[key])
    if source == "hub" and not spec.files:
        if spec.hf_id is None:
            raise TaskDataNotFoundError(spec.name, [], None, spec.schema)
        return {split: _hub_examples(spec, split) for split in spec.hf_splits}
    if source != "local":
        raise ValueError(f"source must be 'local' or 'hub', got {source!r}")
    files = local_task_files(spec, data_dir)
    return {split: _local_file_examples(spec, split, path) for split, path in files.items()}


def clear_caches() -> None:
    """Forget cached rows and examples (e.g. after editing a data file in place)."""
    _ROW_CACHE.clear()
    _EXAMPLE_CACHE.clear()
