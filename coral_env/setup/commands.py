"""CLI subcommands of stage 1: ``coral collect`` and ``coral pretrain-generator``.

``register(subparsers)`` adds both to the ``coral`` parser; handlers import the heavy modules
lazily, so ``coral --help`` stays instant. Errors a user can fix are raised as ``ValueError``,
``KeyError`` or ``FileNotFoundError`` whose message says what to run or change.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..config import add_config_arguments, config_from_args
from ..tasks.registry import IN_DOMAIN
from .artifacts import default_artifacts_root

_PRESETS = "the preset's"


@dataclass
class SetupArgs:
    """Flags every setup command shares."""

    preset: str = field(
        default="cpu", metadata={"help": "scale preset: tiny (tests), cpu (a laptop, minutes), paper (GPU)"}
    )
    artifacts: str = field(
        default_factory=lambda: str(default_artifacts_root()),
        metadata={"help": "artifacts root; files go to <artifacts>/<preset>/... ($CORAL_ARTIFACTS sets the default)"},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "benchmark JSONL folder (default: $CORAL_DATA_DIR, else ../shared/datasets)"}
    )
    split_seed: int = field(
        default=0,
        metadata={
            "help": "task split seed of every stage; recorded per task in <artifacts>/<preset>/splits.json, "
            "which later stages, the env (split_seed=) and `coral eval --split-seed` must match"
        },
    )
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads, >= 1 (default: torch's)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


@dataclass
class CollectArgs(SetupArgs):
    """Settings of ``coral collect``; ``None`` takes the preset's value."""

    tasks: list[str] = field(default_factory=lambda: list(IN_DOMAIN), metadata={"help": "task names"})
    model: str | None = field(default=None, metadata={"help": "override the preset's model"})
    phase1_steps: int | None = field(default=None, metadata={"help": f"phase-1 steps (default: {_PRESETS})"})
    phase1_lr: float | None = field(default=None, metadata={"help": f"phase-1 lr (default: {_PRESETS})"})
    phase2_steps: int | None = field(default=None, metadata={"help": f"phase-2 steps (default: {_PRESETS})"})
    phase2_lr: float | None = field(default=None, metadata={"help": f"phase-2 lr (default: {_PRESETS})"})
    batch_size: int | None = field(default=None, metadata={"help": f"sequences per step (default: {_PRESETS})"})
    max_samples: int | None = field(
        default=None, metadata={"help": f"training examples per task (default: {_PRESETS})"}
    )
    max_len: int | None = field(default=None, metadata={"help": f"tokens per sequence (default: {_PRESETS})"})
    seed: int | None = field(default=None, metadata={"help": f"data-order seed (default: {_PRESETS})"})


@dataclass
class PretrainGeneratorArgs(SetupArgs):
    """Settings of ``coral pretrain-generator``; ``None`` takes the preset's value."""

    tasks: list[str] | None = field(
        default=None, metadata={"help": "training tasks (default: every task collected under --artifacts)"}
    )
    holdout: str | None = field(
        default=None,
        metadata={
            "help": "task(s) to leave out, comma-separated (one generator each); 'each' = every task in --tasks; "
            "omitted = one generator on all tasks"
        },
    )
    steps: int | None = field(default=None, metadata={"help": f"optimizer steps (default: {_PRESETS})"})
    batch_size: int | None = field(default=None, metadata={"help": f"pairs per step (default: {_PRESETS})"})
    lr: float | None = field(default=None, metadata={"help": f"peak learning rate (default: {_PRESETS})"})
    noise_std: float | None = field(default=None, metadata={"help": f"condition noise std (default: {_PRESETS})"})
    token_weighting: str | None = field(
        default=None,
        metadata={"help": f"per-token loss weights (default: {_PRESETS})", "choices": ("uniform", "task_variance")},
    )
    anchor: str | None = field(
        default=None,
        metadata={
            "help": "decoder predicts the checkpoint (none, as in the papers) or its residual from the shared "
            f"init or the training tasks' mean checkpoint (default: {_PRESETS})",
            "choices": ("none", "init", "mean"),
        },
    )
    seed: int | None = field(default=None, metadata={"help": f"init and sampling seed (default: {_PRESETS})"})


def _check_tasks(names: list[str]) -> list[str]:
    from ..tasks import get_task

    return [get_task(n).name for n in names]  # UnknownTaskError lists the known names


def training_tasks(args: argparse.Namespace, paths) -> list[str]:
    """``--tasks``, or every task collected under ``--artifacts`` (an error naming ``coral collect``
    if there is none)."""
    from .artifacts import MissingArtifactError

    tasks = args.tasks
    if tasks is None:
        tasks = paths.collected_tasks()
        if not tasks:
            raise MissingArtifactError(
                f"no collected checkpoints under {paths.base}; run "
                f"`coral collect --preset {args.preset} --tasks TASK1,TASK2,... --artifacts {args.artifacts}` first"
            )
    return _check_tasks(tasks)


def parse_holdouts(text: str | None, tasks: list[str]) -> list[str | None]:
    """``--holdout``: none (train on all), ``each`` (one per task), or comma-separated names."""
    from ..config import csv_list

    if text is None:
        return [None]
    if text.strip() == "each":
        return list(tasks)
    try:
        return _check_tasks(csv_list(text))
    except argparse.ArgumentTypeError:
        raise ValueError("--holdout is empty; give task names, 'each', or leave it out") from None


def add_command(subparsers, name: str, args_cls, handler, **kwargs) -> argparse.ArgumentParser:
    """A setup subcommand whose flags are the fields of ``args_cls`` (defaults shown)."""
    p = subparsers.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    add_config_arguments(p, args_cls, defaults=True)
    p.set_defaults(func=handler)
    return p


def register(subparsers) -> None:
    """Add ``collect`` and ``pretrain-generator`` to an argparse subparsers object."""
    add_command(
        subparsers,
        "collect",
        CollectArgs,
        cmd_collect,
        help="collect LoRA checkpoints of tasks (stage-1 training data)",
        description="Fine-tune a fresh LoRA per task in two phases (high, then low learning rate) "
        "and save the adapter after every step.\nResumes after an interruption; finished "
        "tasks are skipped.",
        epilog="example:\n  coral collect --preset cpu --tasks arc_easy,piqa --artifacts artifacts",
    )
    add_command(
        subparsers,
        "pretrain-generator",
        PretrainGeneratorArgs,
        cmd_pretrain_generator,
        help="train the prompt-to-LoRA generator on collected checkpoints",
        description="Train the hyper-convolutional generator by masked MSE against collected "
        "checkpoints.\nWith --holdout, the named task is left out (leave-one-out); the "
        "generator goes to <artifacts>/<preset>/generator/<holdout>.",
        epilog="examples:\n"
        "  coral pretrain-generator --preset cpu --holdout piqa\n"
        "  coral pretrain-generator --preset cpu --holdout each   # one generator per task",
    )


def _threads(args) -> None:
    """Apply ``--threads`` (0 or less is an error, not torch's default)."""
    import torch

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads} (leave it out for torch's default)")
        torch.set_num_threads(args.threads)


def cmd_collect(args: argparse.Namespace) -> int:
    """Handler of ``coral collect``."""
    from .collect import CollectionConfig, collect

    args = config_from_args(CollectArgs, args)
    _threads(args)
    tasks = _check_tasks(args.tasks)
    config = CollectionConfig.preset(
        args.preset,
        model=args.model,
        phase1_steps=args.phase1_steps,
        phase1_lr=args.phase1_lr,
        phase2_steps=args.phase2_steps,
        phase2_lr=args.phase2_lr,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        max_len=args.max_len,
        seed=args.seed,
        split_seed=args.split_seed,
    )
    for r in collect(config, tasks, args.artifacts, data_dir=args.data_dir, progress=args.progress):
        state = (
            "already collected"
            if r.skipped
            else (
                f"{r.steps} steps, final loss {r.final_loss:.4f}, {r.seconds:.0f} s"
                + (f" (resumed at step {r.resumed_from})" if r.resumed_from else "")
            )
        )
        print(f"{r.task}: {state}")
    return 0


def cmd_pretrain_generator(args: argparse.Namespace) -> int:
    """Handler of ``coral pretrain-generator``."""
    from .artifacts import ArtifactPaths
    from .pretrain_generator import GeneratorTrainingConfig, pretrain_generator

    args = config_from_args(PretrainGeneratorArgs, args)
    _threads(args)
    paths = ArtifactPaths(args.artifacts, args.preset)
    tasks = training_tasks(args, paths)
    holdouts = parse_holdouts(args.holdout, tasks)
    config = GeneratorTrainingConfig.preset(
        args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        noise_std=args.noise_std,
        token_weighting=args.token_weighting,
        anchor=args.anchor,
        seed=args.seed,
        split_seed=args.split_seed,
    )
    encoder = None
    for holdout in holdouts:
        gen = pretrain_generator(
            config,
            args.artifacts,
            tasks,
            holdout=holdout,
            data_dir=args.data_dir,
            encoder=encoder,
            progress=args.progress,
        )
        encoder = gen.encoder
        print(
            f"generator[{holdout or 'all'}]: trained on {', '.join(t for t in tasks if t != holdout)}; "
            f"final loss {gen.extra.get('final_loss', float('nan')):.4f} -> {paths.generator_dir(holdout)}"
        )
    return 0


__all__ = [
    "CollectArgs",
    "PretrainGeneratorArgs",
    "SetupArgs",
    "add_command",
    "cmd_collect",
    "cmd_pretrain_generator",
    "register",
]
