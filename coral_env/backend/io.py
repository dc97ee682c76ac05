"""Atomic artifact writes: temp file or folder beside the target, then rename (a kill never
leaves half a file or half a folder)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` (dataclasses, dicts, lists, paths allowed) as indented JSON, atomically."""
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def atomic_save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor],
                            metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically (contiguous copies, metadata values as strings)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    _atomic(Path(path), lambda tmp: save_file(clean, tmp, metadata=meta))


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (logs survive a kill)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(_jsonable(record)) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_state(path: str | Path, config_hash: str, mismatch: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a resumable safetensors state; ``ValueError(mismatch)`` when it was
    written under another ``config_hash`` (a run must not resume from another config's state)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if meta.get("config_hash") != config_hash:
        raise ValueError(mismatch)
    return meta, tensors


def load_artifact(directory: str | Path, fmt: str, what: str, made_by: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a ``config.json`` + ``model.safetensors`` folder (never pickle): (config, tensors).

    Raises ``FileNotFoundError`` naming the command that makes one (``made_by``) when a file is
    missing, and ``ValueError`` when the config's ``format`` is not ``fmt``.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path, weights = directory / "config.json", directory / "model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise FileNotFoundError(f"{directory} is not a {what} folder (expected config.json and "
                                f"model.safetensors); train one with `{made_by}`")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != fmt:
        raise ValueError(f"{cfg_path} is not a Coral {what} config (format {cfg.get('format')!r})")
    return cfg, load_file(str(weights))
