"""Atomic artifact writes: temp file or folder beside the target, then rename (a kill never
leaves half a file or half a folder)."""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

_UMASK = os.umask(0)
os.umask(_UMASK)
logger = logging.getLogger(__name__)
_TMP_SUFFIX = ".tmp"


class CorruptArtifactError(ValueError):
    """An artifact file exists but cannot be read (truncated, garbage, wrong kind); the message
    names the file and the fix (which file or folder to delete, and which command re-makes it)."""


def corrupt(path: str | Path, why: str, fix: str) -> CorruptArtifactError:
    """The error for an unreadable ``path``: ``"<path> is corrupt or incomplete (<why>); <fix>"``."""
    return CorruptArtifactError(f"{path} is corrupt or incomplete ({why}); {fix}")


def _writer_alive(tmp_name: str) -> bool:
    """Whether the process that owns a temp file (``.<name>.<pid>.<random>.tmp``) still runs."""
    try:
        pid = int(tmp_name[: -len(_TMP_SUFFIX)].rsplit(".", 2)[-2])
    except (ValueError, IndexError):
        return False
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Delete temp files of ``path`` left by a killed writer (its process is gone)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{_TMP_SUFFIX}"):
        if not _writer_alive(tmp.name):
            tmp.unlink(missing_ok=True)


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=_TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_dir(target: str | Path, *, replace: bool = True, clean_stale: bool = False) -> Iterator[Path]:
    """Write a folder atomically: yield an empty temporary folder beside ``target``; when the
    block succeeds, it becomes ``target``.

    An existing ``target`` is kept until the new folder is in place: it is moved aside, the new
    one renamed in, and only then deleted (a failed rename moves it back). An exception or a
    kill inside the block leaves ``target`` as it was (an exception also removes the temporary
    folder). ``replace=False`` keeps an existing ``target`` and discards the new folder (caches
    that another process may fill at the same time). ``clean_stale=True`` first removes the
    temporary folders a killed run left and restores a folder a kill left moved aside; only a
    single writer of ``target`` may ask for it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = target.with_name(f".{target.name}.old")
    if clean_stale:
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if aside.exists() and not target.exists():
            os.replace(aside, target)  # a kill between the two renames below
        shutil.rmtree(aside, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; artifacts get the usual mode
        if not target.exists():
            os.replace(tmp, target)
        elif replace:
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(target, aside)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(aside, target)
                raise
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a rename; the new folder otherwise


def _jsonable(obj: Any, where: str = "") -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(obj):  # JSON has no NaN/Infinity; strict readers reject them
            logger.warning("non-finite value %r at %s written as null", float(obj), where or "top level")
            return None
        return float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Standard JSON of ``obj`` (dataclasses, dicts, lists, paths, numpy scalars allowed): a
    non-finite float is written as ``null`` (with a warning), never as ``NaN``/``Infinity``."""
    return json.dumps(_jsonable(obj), indent=indent, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented standard JSON (``to_json``), atomically."""
    text = to_json(obj) + "\n"
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def _sort_header_metadata(path: str) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` keys sorted (safetensors writes them
    in hash order, so equal artifacts would differ byte for byte)."""
    with open(path, "r+b") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
        if not header.get("__metadata__"):
            return
        header = {
            "__metadata__": dict(sorted(header["__metadata__"].items())),
            **{k: v for k, v in header.items() if k != "__metadata__"},
        }
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # never happens for the same content; keep the file valid if it does
            return
        fh.seek(8)
        fh.write(text + b" " * (size - len(text)))


def atomic_save_safetensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Save tensors as safetensors atomically (contiguous copies, metadata values as strings, in
    sorted key order: equal tensors and metadata give byte-identical files)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in sorted((metadata or {}).items())}

    def write(tmp: str) -> None:
        save_file(clean, tmp, metadata=meta)
        _sort_header_metadata(tmp)

    _atomic(Path(path), write)


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (logs survive a kill; a line a kill cut short is
    dropped first, so it never merges with the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            cut = fh.read(1) != b"\n"
        if cut:
            text = path.read_text()
            atomic_write_text(path, text[: text.rfind("\n") + 1])
    with open(path, "a") as fh:
        fh.write(to_json(record, indent=None) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def append_jsonl_once(path: str | Path, record: dict, keys: tuple[str, ...] = ("event",)) -> bool:
    """``append_jsonl`` unless a line with the same values of ``keys`` is there already (a job
    resumed after a kill logs what the kill cut off, never twice). Returns whether it appended."""
    path = Path(path)
    if path.exists():
        want = json.loads(to_json({k: record.get(k) for k in keys}, indent=None))
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if {k: row.get(k) for k in keys} == want:
                return False
    append_jsonl(path, record)
    return True


def trim_jsonl(path: str | Path, step: int) -> None:
    """Keep the log lines whose ``"step"`` is at most ``step`` (a resumed job drops the rows a
    killed run wrote after its last saved state, which it is about to write again)."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if row.get("step", 0) <= step:
            kept.append(line)
    if kept != lines:
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_json(path: str | Path, fix: str) -> dict:
    """The JSON object in ``path``; ``CorruptArtifactError`` naming the file and ``fix`` (e.g.
    "delete it and re-run `coral collect ...`") when it is not valid JSON or not an object."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise corrupt(path, f"not valid JSON: {exc}", fix) from None
    if not isinstance(value, dict):
        raise corrupt(path, f"a JSON {type(value).__name__} where an object was expected", fix)
    return value


def read_safetensors(path: str | Path, fix: str, keys: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file (``keys=False``: metadata only, tensors ``{}``);
    ``CorruptArtifactError`` naming the file and ``fix`` when it is truncated or not safetensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()} if keys else {}
    except (SafetensorError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise corrupt(path, f"safetensors cannot read it: {exc}", fix) from None
    return meta, tensors


def read_state(path: str | Path, config_hash: str, mismatch: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a resumable safetensors state; ``ValueError(mismatch)`` when it was
    written under another ``config_hash`` (a run must not resume from another config's state),
    ``CorruptArtifactError`` when it is unreadable (deleting it restarts the stage from step 0)."""
    meta, tensors = read_safetensors(
        path, "delete it and re-run the same command (the stage restarts from its first step)"
    )
    if meta.get("config_hash") != config_hash:
        raise ValueError(mismatch)
    return meta, tensors


def load_artifact(directory: str | Path, fmt: str, what: str, made_by: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a ``config.json`` + ``model.safetensors`` folder (never pickle): (config, tensors).

    Raises ``FileNotFoundError`` naming the command that makes one (``made_by``) when a file is
    missing, ``CorruptArtifactError`` (delete the folder, re-run ``made_by``) when one is
    unreadable, and ``ValueError`` when the config's ``format`` is not ``fmt``.
    """
    directory = Path(directory)
    cfg_path, weights = directory / "config.json", directory / "model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise FileNotFoundError(
            f"{directory} is not a {what} folder (expected config.json and "
            f"model.safetensors); train one with `{made_by}`"
        )
    fix = f"delete {directory} and re-run `{made_by}`"
    cfg = read_json(cfg_path, fix)
    if cfg.get("format") != fmt:
        raise ValueError(f"{cfg_path} is not a Coral {what} config (format {cfg.get('format')!r})")
    _, tensors = read_safetensors(weights, fix)
    return cfg, tensors
