"""CLI subcommands of stage 2 and of the whole pipeline: ``coral pretrain-cvae`` and ``coral setup``.

``register(subparsers)`` adds both to the ``coral`` parser; handlers import the heavy modules
lazily. Errors a user can fix are ``ValueError`` / ``KeyError`` / ``FileNotFoundError`` whose
message says what to run or change (``MissingArtifactError`` names the missing stage's command).
"""

from __future__ import annotations

import argparse

from .commands import _check_tasks, _common, _task_list, _threads, parse_holdouts, training_tasks


def register(subparsers) -> None:
    """Add ``pretrain-cvae`` and ``setup`` to an argparse subparsers object."""
    from .pipeline import TINY_TASKS

    p = subparsers.add_parser(
        "pretrain-cvae", help="train the alignment CVAE on collected checkpoints (stage 2)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Meta-train the conditional VAE (Reptile) on (adapter, task vector) pairs of the "
                    "collected tasks.\n--target input reconstructs the input checkpoint (the paper); "
                    "--target checkpoint maps\ngenerated adapters to real checkpoints (needs the "
                    "generator of the same --holdout).\nThe CVAE goes to "
                    "<artifacts>/<preset>/cvae/<holdout|all>/<target>; resumes after an interruption.",
        epilog="examples:\n"
               "  coral pretrain-cvae --preset cpu --holdout piqa\n"
               "  coral pretrain-cvae --preset cpu --holdout each --target checkpoint")
    _common(p)
    p.add_argument("--tasks", default=None,
                   help="comma-separated training tasks (default: every task collected under --artifacts)")
    p.add_argument("--holdout", default=None,
                   help="task(s) to leave out, comma-separated (one CVAE each); 'each' = every task in "
                        "--tasks; omitted = one CVAE on all tasks")
    p.add_argument("--target", default="input", choices=("input", "checkpoint"),
                   help="reconstruction target (default: %(default)s)")
    p.add_argument("--meta-steps", type=int, default=None, help="Reptile meta-steps (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per inner step (default: the preset's)")
    p.add_argument("--inner-lr", type=float, default=None, help="inner learning rate (default: the preset's)")
    p.add_argument("--meta-lr", type=float, default=None, help="meta learning rate (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="init and sampling seed (default: the preset's)")
    p.set_defaults(func=cmd_pretrain_cvae)

    p = subparsers.add_parser(
        "setup", help="run the whole pretraining pipeline: collect -> generator -> CVAE",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Collect LoRA checkpoints, train the generator, then the alignment CVAE, skipping "
                    "every stage\nthat is already done and resuming one that was interrupted.",
        epilog="examples:\n"
               "  coral setup --preset cpu\n"
               "  coral setup --preset cpu --holdout piqa --targets input,checkpoint")
    _common(p)
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks (default: the six in-domain tasks; at --preset tiny the "
                        f"synthetic {','.join(TINY_TASKS)}, which need no data folder)")
    p.add_argument("--holdout", default=None, help="leave-one-out task (default: none, train on all)")
    p.add_argument("--targets", default="input",
                   help="CVAE targets to train, comma-separated: input, checkpoint (default: %(default)s)")
    p.set_defaults(func=cmd_setup)


def cmd_pretrain_cvae(args: argparse.Namespace) -> int:
    """Handler of ``coral pretrain-cvae``."""
    from .artifacts import ArtifactPaths
    from .pretrain_cvae import CVAETrainingConfig, build_vectorizer, cvae_path, pretrain_cvae

    paths = ArtifactPaths(args.artifacts, args.preset)
    tasks = training_tasks(args, paths)
    config = CVAETrainingConfig.preset(args.preset, target=args.target, meta_steps=args.meta_steps,
                                       batch_size=args.batch_size, inner_lr=args.inner_lr, meta_lr=args.meta_lr,
                                       seed=args.seed)
    _threads(args)
    vectorizer = None
    for holdout in parse_holdouts(args.holdout, tasks):
        train = [t for t in tasks if t != holdout]
        paths.require_collected(train)
        if vectorizer is None:
            vectorizer = build_vectorizer(paths, train[0], config)
        cvae = pretrain_cvae(config, args.artifacts, tasks, holdout=holdout, data_dir=args.data_dir,
                             vectorizer=vectorizer, progress=not args.no_progress)
        extra = getattr(cvae, "extra", {})
        print(f"cvae[{holdout or 'all'}/{args.target}]: trained on {', '.join(train)}; reconstruction MSE "
              f"{extra.get('cvae_mse', float('nan')):.4f} (training mean: {extra.get('mean_mse', float('nan')):.4f})"
              f" -> {cvae_path(args.artifacts, args.preset, holdout, args.target)}")
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    """Handler of ``coral setup``."""
    from .pipeline import run_setup

    tasks = _check_tasks(_task_list(args.tasks)) if args.tasks is not None else None
    targets = _task_list(args.targets) or ["input"]
    bad = [t for t in targets if t not in ("input", "checkpoint")]
    if bad:
        raise ValueError(f"unknown CVAE target(s) {', '.join(bad)}; use input and/or checkpoint")
    _threads(args)
    result = run_setup(args.preset, args.artifacts, tasks, holdout=args.holdout, data_dir=args.data_dir,
                       targets=targets, progress=not args.no_progress)
    print(f"setup [{result.preset}] done; trained on {', '.join(t for t in result.tasks if t != result.holdout)}")
    print(f"  generator: {result.generator_dir}")
    for target, folder in result.cvae_dirs.items():
        print(f"  cvae ({target}): {folder}")
    return 0


__all__ = ["register", "cmd_pretrain_cvae", "cmd_setup"]
