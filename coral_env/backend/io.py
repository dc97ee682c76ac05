"""Atomic artifact writes: temp file in the same folder, then rename (a kill never leaves half a file)."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

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
