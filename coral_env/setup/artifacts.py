"""Where every stage-1/2 artifact lives, and loading collected checkpoints back.

One folder per preset under an artifacts root::

    <root>/<preset>/
        layout/                      layout.json, layout_scales.safetensors (identity scales),
                                     init_adapter.safetensors (the shared LoRA initialisation)
        collect/<task>/              config.json, log.jsonl, state.safetensors (resume point),
                                     checkpoints/step_00001.safetensors ... (one per step)
        generator/<holdout|all>/     config.json, model.safetensors, train_state.safetensors,
                                     train_config.json, log.jsonl
        cvae/<holdout|all>/          the alignment agent's artifacts (next stage)
        cache/                       prompt-embedding cache

Everything is safetensors + JSON: nothing is unpickled, so a downloaded artifact cannot run code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backend.io import corrupt, read_json, read_safetensors

ALL = "all"


def default_artifacts_root() -> Path:
    """``$CORAL_ARTIFACTS`` or ``~/.cache/coral/artifacts``: where ``coral setup`` writes and
    ``Coral-v0`` looks when no artifacts folder is given."""
    return Path(os.environ.get("CORAL_ARTIFACTS", Path.home() / ".cache" / "coral" / "artifacts"))


class MissingArtifactError(FileNotFoundError):
    """An artifact a stage needs is absent; the message names the command that makes it."""


@dataclass(frozen=True)
class ArtifactPaths:
    """Names every artifact location of one preset under ``root``.

    >>> p = ArtifactPaths("artifacts", "cpu")
    >>> p.checkpoint_file("arc_easy", 3).as_posix()
    'artifacts/cpu/collect/arc_easy/checkpoints/step_00003.safetensors'
    >>> p.generator_dir("piqa").as_posix(), p.generator_dir().as_posix()
    ('artifacts/cpu/generator/piqa', 'artifacts/cpu/generator/all')
    """

    root: Path
    preset: str

    def __init__(self, root: str | Path, preset: str) -> None:
        object.__setattr__(self, "root", Path(root))
        object.__setattr__(self, "preset", preset)

    @property
    def base(self) -> Path:
        return self.root / self.preset

    # ----- layout ------------------------------------------------------------------------
    @property
    def layout_dir(self) -> Path:
        return self.base / "layout"

    @property
    def init_adapter(self) -> Path:
        return self.layout_dir / "init_adapter.safetensors"

    @property
    def cache_dir(self) -> Path:
        return self.base / "cache"

    # ----- collection --------------------------------------------------------------------
    def collect_dir(self, task: str) -> Path:
        return self.base / "collect" / task

    def checkpoint_dir(self, task: str) -> Path:
        return self.collect_dir(task) / "checkpoints"

    def checkpoint_file(self, task: str, step: int) -> Path:
        return self.checkpoint_dir(task) / f"step_{step:05d}.safetensors"

    def collect_state(self, task: str) -> Path:
        return self.collect_dir(task) / "state.safetensors"

    def collect_config(self, task: str) -> Path:
        return self.collect_dir(task) / "config.json"

    def collect_log(self, task: str) -> Path:
        return self.collect_dir(task) / "log.jsonl"

    def collected_tasks(self) -> list[str]:
        """Tasks whose collection finished (their ``config.json`` records ``complete``)."""
        folder = self.base / "collect"
        if not folder.is_dir():
            return []
        return sorted(d.name for d in folder.iterdir() if self.is_collected(d.name))

    def recollect_fix(self, task: str) -> str:
        """What to do about a corrupt or incomplete collection of ``task`` (for error messages)."""
        return f"delete {self.collect_dir(task)} and re-run `{self.collect_command(task)}`"

    def collect_info(self, task: str) -> dict:
        """The ``config.json`` of a task's collection (``CorruptArtifactError`` if unreadable)."""
        return read_json(self.collect_config(task), self.recollect_fix(task))

    def is_collected(self, task: str) -> bool:
        if not self.collect_config(task).exists():
            return False
        return bool(self.collect_info(task).get("complete", False))

    # ----- later stages ------------------------------------------------------------------
    def generator_dir(self, holdout: str | None = None) -> Path:
        """Generator trained without ``holdout`` (``None``: on every collected task)."""
        return self.base / "generator" / (holdout or ALL)

    def cvae_dir(self, holdout: str | None = None) -> Path:
        return self.base / "cvae" / (holdout or ALL)

    # ----- loading -----------------------------------------------------------------------
    def collect_command(self, tasks: list[str] | str) -> str:
        """The CLI command that collects ``tasks`` into this folder (for error messages)."""
        names = tasks if isinstance(tasks, str) else ",".join(tasks)
        return f"coral collect --preset {self.preset} --tasks {names} --artifacts {self.root}"

    def require_collected(self, tasks: list[str]) -> None:
        """Raise ``MissingArtifactError`` naming the ``coral collect`` command if any task lacks
        a finished collection."""
        missing = [t for t in tasks if not self.is_collected(t)]
        if missing:
            raise MissingArtifactError(
                f"no finished checkpoint collection for {', '.join(missing)} under {self.base}; "
                f"run `{self.collect_command(missing)}` first"
            )

    def checked_checkpoints(self, task: str) -> list[Path]:
        """The checkpoint files of a finished collection, checked against its saved
        ``total_steps`` (a missing or extra file is an error naming the fix)."""
        total = self.collect_info(task).get("total_steps")
        files = sorted(self.checkpoint_dir(task).glob("step_*.safetensors"))
        steps = set()
        for path in files:
            try:
                steps.add(int(path.stem.removeprefix("step_")))
            except ValueError:
                raise corrupt(path, "not a step_NNNNN checkpoint name", self.recollect_fix(task)) from None
        if not isinstance(total, int) or steps != set(range(1, total + 1)):
            what = _missing_steps(steps, total) if isinstance(total, int) else "its config.json has no total_steps"
            extra = sorted(s for s in steps if isinstance(total, int) and s > total)
            if extra:
                what += f"; {len(extra)} checkpoints past step {total}"
            raise corrupt(self.checkpoint_dir(task), what, self.recollect_fix(task))
        return files

    def load_checkpoints(
        self,
        task: str,
        phases: tuple[int, ...] | None = None,
    ) -> tuple[torch.Tensor, list[dict]]:
        """All collected checkpoints of ``task`` in step order.

        Args:
            phases: keep only these collection phases (1, 2); ``None`` keeps every step.
        Returns:
            ``(vectors, metadata)``: fp32 tensor (n, adapter size) and one dict per row (task,
            step, phase, phase_step, loss, lr, config_hash).
        """
        self.require_collected([task])
        files = self.checked_checkpoints(task)
        fix = self.recollect_fix(task)
        rows, meta = [], []
        for path in files:
            raw, _ = read_safetensors(path, fix, keys=False)
            try:
                info = _parse_metadata(raw)
            except (KeyError, ValueError) as exc:
                raise corrupt(path, f"its metadata lacks a readable {exc}", fix) from None
            if phases is not None and info["phase"] not in phases:
                continue
            _, tensors = read_safetensors(path, fix)
            if "adapter" not in tensors:
                raise corrupt(path, "no 'adapter' tensor", fix)
            rows.append(tensors["adapter"].float())
            meta.append(info)
        if not rows:
            raise MissingArtifactError(
                f"task {task!r} has no checkpoints in phases {phases} under {self.checkpoint_dir(task)}; "
                f"run `{self.collect_command(task)}`"
            )
        hashes = {m["config_hash"] for m in meta}
        if len(hashes) > 1:
            raise ValueError(
                f"checkpoints of {task!r} come from different collection configs "
                f"({sorted(hashes)}); delete {self.collect_dir(task)} and collect again"
            )
        return torch.stack(rows), meta


def _missing_steps(found: set[int], total: int) -> str:
    missing = sorted(set(range(1, total + 1)) - found)
    shown = ", ".join(f"step_{s:05d}" for s in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return f"{len(missing)} of {total} checkpoints missing ({shown})"


def _parse_metadata(raw: dict[str, str] | None) -> dict:
    raw = dict(raw or {})
    out: dict = {"task": raw.get("task", ""), "config_hash": raw.get("config_hash", "")}
    for key in ("step", "phase", "phase_step"):
        out[key] = int(raw[key])
    for key in ("loss", "lr"):
        out[key] = float(raw[key])
    return out


__all__ = ["ALL", "ArtifactPaths", "MissingArtifactError"]
