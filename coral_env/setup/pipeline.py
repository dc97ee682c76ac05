"""``coral setup``: the whole pretraining pipeline in order, skipping what is already done.

    collection (stage-1 data) -> generator (stage 1) -> CVAE (stage 2)

Each stage is the stage's own resumable function: finished collections are skipped, a
finished generator or CVAE with the same config is loaded instead of retrained, and an
interrupted stage continues from its last saved state. Running ``run_setup`` twice is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..backend.config import check_preset
from ..tasks import IN_DOMAIN, get_task
from .artifacts import ArtifactPaths
from .pretrain_cvae import CVAETrainingConfig, cvae_path

# The tiny preset is for mechanics: synthetic tasks need no data folder.
TINY_TASKS = ("syn_add", "syn_parity", "syn_compare")


@dataclass
class SetupResult:
    """What ``run_setup`` produced (folders under the artifacts root)."""

    preset: str
    tasks: list[str]
    holdout: str | None
    collected: list[str] = field(default_factory=list)
    generator_dir: Path | None = None
    cvae_dirs: dict[str, Path] = field(default_factory=dict)


def run_setup(
    preset: str,
    artifacts: str | Path,
    tasks: Sequence[str] | None = None,
    holdout: str | None = None,
    data_dir: str | Path | None = None,
    *,
    targets: Sequence[str] = ("input",),
    collection_overrides: dict | None = None,
    generator_overrides: dict | None = None,
    cvae_overrides: dict | None = None,
    split_seed: int | None = None,
    progress: bool = True,
) -> SetupResult:
    """Collect checkpoints, train the generator, then the CVAE(s), for ``tasks`` minus ``holdout``.

    Args:
        preset: ``tiny``, ``cpu`` or ``paper``.
        artifacts: artifacts root (``ArtifactPaths``).
        tasks: tasks to collect and train on (default: the six in-domain tasks; ``tiny``: three
            synthetic ones). The held-out
            task is collected too only if listed here; it is never trained on.
        holdout: leave-one-out task (``None``: train on every task).
        targets: CVAE reconstruction targets to train (``input``, ``checkpoint`` or both).
        *_overrides: field overrides of each stage's preset config (e.g. ``{"steps": 50}``).
        split_seed: the task split seed of every stage (``None``: the configs' own, 0 by default).
    """
    from .collect import CollectionConfig, collect
    from .pretrain_cvae import pretrain_cvae
    from .pretrain_generator import GeneratorTrainingConfig, pretrain_generator

    check_preset(preset)
    if split_seed is not None:
        collection_overrides = {"split_seed": split_seed, **(collection_overrides or {})}
        generator_overrides = {"split_seed": split_seed, **(generator_overrides or {})}
        cvae_overrides = {"split_seed": split_seed, **(cvae_overrides or {})}
    default = TINY_TASKS if preset == "tiny" else IN_DOMAIN
    tasks = [get_task(t).name for t in dict.fromkeys(tasks or default)]
    holdout = get_task(holdout).name if holdout else None
    train_tasks = [t for t in tasks if t != holdout]
    if not train_tasks:
        raise ValueError(f"no training tasks left after holding out {holdout!r}")
    result = SetupResult(preset, tasks, holdout)

    collect(
        CollectionConfig.preset(preset, **(collection_overrides or {})),
        train_tasks,
        artifacts,
        data_dir=data_dir,
        progress=progress,
    )
    result.collected = list(train_tasks)

    generator = pretrain_generator(
        GeneratorTrainingConfig.preset(preset, **(generator_overrides or {})),
        artifacts,
        train_tasks,
        holdout=holdout,
        data_dir=data_dir,
        progress=progress,
    )
    result.generator_dir = ArtifactPaths(artifacts, preset).generator_dir(holdout)

    vectorizer = None
    for target in targets:
        config = CVAETrainingConfig.preset(preset, target=target, **(cvae_overrides or {}))
        if vectorizer is None:
            from .pretrain_cvae import build_vectorizer

            vectorizer = build_vectorizer(ArtifactPaths(artifacts, preset), train_tasks[0], config)
        pretrain_cvae(
            config,
            artifacts,
            train_tasks,
            holdout=holdout,
            data_dir=data_dir,
            vectorizer=vectorizer,
            generator=generator if target == "checkpoint" else None,
            progress=progress,
        )
        result.cvae_dirs[target] = cvae_path(artifacts, preset, holdout, target)
    return result


__all__ = ["SetupResult", "run_setup"]
