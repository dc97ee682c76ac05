"""CLI subcommands of stage 2 and of the whole pipeline: ``coral pretrain-cvae`` and ``coral setup``.

``register(subparsers)`` adds both to the ``coral`` parser; handlers import the heavy modules
lazily. Errors a user can fix are ``ValueError`` / ``KeyError`` / ``FileNotFoundError`` whose
message says what to run or change (``MissingArtifactError`` names the missing stage's command).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..config import config_from_args
from .commands import SetupArgs, _check_tasks, _threads, add_command, parse_holdouts, training_tasks
from .pipeline import TINY_TASKS

_PRESETS = "the preset's"


@dataclass
class PretrainCVAEArgs(SetupArgs):
    """Settings of ``coral pretrain-cvae``; ``None`` takes the preset's value."""

    tasks: list[str] | None = field(
        default=None, metadata={"help": "training tasks (default: every task collected under --artifacts)"}
    )
    holdout: str | None = field(
        default=None,
        metadata={
            "help": "task(s) to leave out, comma-separated (one CVAE each); 'each' = every task in --tasks; "
            "omitted = one CVAE on all tasks"
        },
    )
    target: str = field(default="input", metadata={"help": "reconstruction target", "choices": ("input", "checkpoint")})
    meta_steps: int | None = field(default=None, metadata={"help": f"Reptile meta-steps (default: {_PRESETS})"})
    batch_size: int | None = field(default=None, metadata={"help": f"pairs per inner step (default: {_PRESETS})"})
    inner_lr: float | None = field(default=None, metadata={"help": f"inner learning rate (default: {_PRESETS})"})
    meta_lr: float | None = field(default=None, metadata={"help": f"meta learning rate (default: {_PRESETS})"})
    seed: int | None = field(default=None, metadata={"help": f"init and sampling seed (default: {_PRESETS})"})


@dataclass
class SetupPipelineArgs(SetupArgs):
    """Settings of ``coral setup``."""

    tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "task names (default: the six in-domain tasks; at --preset tiny the synthetic "
            f"{','.join(TINY_TASKS)}, which need no data folder)"
        },
    )
    holdout: str | None = field(default=None, metadata={"help": "leave-one-out task (default: none, train on all)"})
    targets: list[str] = field(
        default_factory=lambda: ["input"], metadata={"help": "CVAE targets to train: input, checkpoint"}
    )


def register(subparsers) -> None:
    """Add ``pretrain-cvae`` and ``setup`` to an argparse subparsers object."""
    add_command(
        subparsers,
        "pretrain-cvae",
        PretrainCVAEArgs,
        cmd_pretrain_cvae,
        help="train the alignment CVAE on collected checkpoints (stage 2)",
        description="Meta-train the conditional VAE (Reptile) on (adapter, task vector) pairs of the "
        "collected tasks.\n--target input reconstructs the input checkpoint (the paper); "
        "--target checkpoint maps\ngenerated adapters to real checkpoints (needs the "
        "generator of the same --holdout).\nThe CVAE goes to "
        "<artifacts>/<preset>/cvae/<holdout|all>/<target>; resumes after an interruption.",
        epilog="examples:\n"
        "  coral pretrain-cvae --preset cpu --holdout piqa\n"
        "  coral pretrain-cvae --preset cpu --holdout each --target checkpoint",
    )
    add_command(
        subparsers,
        "setup",
        SetupPipelineArgs,
        cmd_setup,
        help="run the whole pretraining pipeline: collect -> generator -> CVAE",
        description="Collect LoRA checkpoints, train the generator, then the alignment CVAE, skipping "
        "every stage\nthat is already done and resuming one that was interrupted.",
        epilog="examples:\n"
        "  coral setup --preset cpu\n"
        "  coral setup --preset cpu --holdout piqa --targets input,checkpoint\n"
        "  coral setup --preset cpu --split-seed 1   # then gym.make(..., split_seed=1)",
    )


def cmd_pretrain_cvae(args: argparse.Namespace) -> int:
    """Handler of ``coral pretrain-cvae``."""
    from .artifacts import ArtifactPaths
    from .pretrain_cvae import CVAETrainingConfig, build_vectorizer, cvae_path, pretrain_cvae

    args = config_from_args(PretrainCVAEArgs, args)
    _threads(args)
    paths = ArtifactPaths(args.artifacts, args.preset)
    tasks = training_tasks(args, paths)
    config = CVAETrainingConfig.preset(
        args.preset,
        target=args.target,
        meta_steps=args.meta_steps,
        batch_size=args.batch_size,
        inner_lr=args.inner_lr,
        meta_lr=args.meta_lr,
        seed=args.seed,
        split_seed=args.split_seed,
    )
    vectorizer = None
    for holdout in parse_holdouts(args.holdout, tasks):
        train = [t for t in tasks if t != holdout]
        paths.require_collected(train)
        if vectorizer is None:
            vectorizer = build_vectorizer(paths, train[0], config)
        cvae = pretrain_cvae(
            config,
            args.artifacts,
            tasks,
            holdout=holdout,
            data_dir=args.data_dir,
            vectorizer=vectorizer,
            progress=args.progress,
        )
        extra = getattr(cvae, "extra", {})
        print(
            f"cvae[{holdout or 'all'}/{args.target}]: trained on {', '.join(train)}; reconstruction MSE "
            f"{extra.get('cvae_mse', float('nan')):.4f} (training mean: {extra.get('mean_mse', float('nan')):.4f})"
            f" -> {cvae_path(args.artifacts, args.preset, holdout, args.target)}"
        )
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    """Handler of ``coral setup``."""
    from .pipeline import run_setup

    args = config_from_args(SetupPipelineArgs, args)
    _threads(args)
    tasks = _check_tasks(args.tasks) if args.tasks is not None else None
    targets = args.targets
    bad = [t for t in targets if t not in ("input", "checkpoint")]
    if bad:
        raise ValueError(f"unknown CVAE target(s) {', '.join(bad)}; use input and/or checkpoint")
    result = run_setup(
        args.preset,
        args.artifacts,
        tasks,
        holdout=args.holdout,
        data_dir=args.data_dir,
        targets=targets,
        split_seed=args.split_seed,
        progress=args.progress,
    )
    print(f"setup [{result.preset}] done; trained on {', '.join(t for t in result.tasks if t != result.holdout)}")
    print(f"  generator: {result.generator_dir}")
    for target, folder in result.cvae_dirs.items():
        print(f"  cvae ({target}): {folder}")
    return 0


__all__ = ["PretrainCVAEArgs", "SetupPipelineArgs", "cmd_pretrain_cvae", "cmd_setup", "register"]
