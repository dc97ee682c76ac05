"""The ``coral`` command.

Subcommands import what they need inside their handlers, so ``coral --help`` is instant and
trainers are only imported by the subcommands that run them (layers import downward: cli
imports trainers lazily, nothing else in ``coral_env`` imports them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

from .allocator import tune_allocator
from .config import add_config_arguments, run_guarded


@dataclass
class EvalArgs:
    """Settings of ``coral eval``."""

    task: str = field(metadata={"help": "task name (see `coral tasks`) or a user task config path (.json/.yaml)"})
    model: str = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "tiny, an offline name (smollm2-135m-instruct, qwen2.5-coder-0.5b-instruct), a .gguf file, "
            "a model folder, or a Hub id"
        },
    )
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 where supported), bf16, fp16, fp32"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's)"})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "folder of benchmark JSONL files (default: $CORAL_DATA_DIR, else ../shared/datasets)"},
    )
    split_seed: int = field(default=0, metadata={"help": "task split seed; must match the artifacts' split manifest"})
    preset: str = field(
        default="cpu",
        metadata={
            "help": "whose split sizes to use (test rows: tiny 16, cpu 300, paper 1000)",
            "choices": ("tiny", "cpu", "paper"),
        },
    )
    artifacts: str | None = field(
        default=None,
        metadata={
            "help": "artifacts root whose split manifest the splits must match when it records the task "
            "(default: $CORAL_ARTIFACTS or ~/.cache/coral/artifacts)"
        },
    )
    split: str = field(
        default="test", metadata={"help": "task split", "choices": ("train", "support", "validation", "test")}
    )
    limit: int | None = field(
        default=None, metadata={"help": "first N examples of the split (at most the split's size; never re-carves)"}
    )
    adapter: str | None = field(default=None, metadata={"help": "a PEFT adapter folder to apply"})
    style: str = field(
        default="plain",
        metadata={
            "help": "prompt style: plain (lm-eval-harness format) or chat (chat template)",
            "choices": ("plain", "chat"),
        },
    )
    json: bool = field(default=False, metadata={"help": "print one JSON object"})


def _check_runtime_args(args: argparse.Namespace) -> None:
    """``--threads``, ``--device`` and ``--dtype``, checked before any data or model loads."""
    import torch

    from .backend.models import resolve_dtype

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device {args.device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {args.device!r} is not supported; use cpu, cuda or cuda:N")
    resolve_dtype(args.dtype, args.device)  # an unknown dtype names the allowed ones


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model (optionally with an adapter) on one task split."""
    import torch

    from .backend.evaluator import evaluate
    from .backend.lora import AdapterLayout, attach_lora, load_adapter, state_for_layout
    from .backend.models import load_model
    from .setup.artifacts import ArtifactPaths, default_artifacts_root
    from .setup.split_manifest import contract_splits
    from .tasks import PRESET_SPLIT_SIZES, resolve_task

    args.task = resolve_task(args.task)  # a config path registers its task
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    _check_runtime_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    # The preset's splits, checked against (never written to) the artifacts' manifest: --limit
    # takes the first N rows and never re-carves, so a test row stays a test row.
    paths = ArtifactPaths(args.artifacts or default_artifacts_root(), args.preset)
    splits = contract_splits(paths, args.task, args.data_dir, args.split_seed, record=False)
    examples = splits.split(args.split)
    if args.limit is not None:
        if args.limit > len(examples):
            bigger = [p for p, s in PRESET_SPLIT_SIZES.items() if getattr(s, args.split, 0) > len(examples)]
            raise ValueError(
                f"--limit {args.limit} asks for more than the {len(examples)} {args.split} rows of task "
                f"{args.task!r} at preset {args.preset}; a larger split would be carved differently and "
                f"overlap the other splits. Use --limit {len(examples)} or less"
                + (f", or --preset {bigger[0]}" if bigger and args.split != "train" else "")
            )
        examples = examples[: args.limit]
    model, tokenizer = load_model(args.model, args.dtype, args.device)
    if args.adapter:
        loaded = load_adapter(args.adapter)
        model = attach_lora(model, loaded.spec)
        layout = AdapterLayout.from_model(model)
        layout.set_flat(state_for_layout(layout, loaded.state))
    result = evaluate(model, tokenizer, examples, task=args.task, style=args.style)
    summary = result.summary() | {
        "model": args.model,
        "split": args.split,
        "adapter": args.adapter,
        "style": args.style,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        lo, hi = result.ci95
        print(f"{args.task} [{args.split}, n={result.n}] accuracy {result.accuracy:.4f} (95% CI {lo:.4f}-{hi:.4f})")
        for name in ("acc_norm", "balanced_accuracy", "auc"):
            if name in summary:
                print(f"  {name}: {summary[name]:.4f}")
        print(f"  {result.seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coral",
        description="Coral: LLM adaptation as a reinforcement-learning problem "
        "(generator -> CVAE alignment -> strategy policy).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "eval",
        help="evaluate a model (and adapter) on a task split",
        description="Evaluate a model on a task: accuracy with a 95% Wilson CI "
        "(plus acc_norm; balanced accuracy and AUC for two-answer tasks).",
    )
    add_config_arguments(p, EvalArgs, defaults=True)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("tasks", help="list the known tasks")
    p.set_defaults(func=cmd_tasks)

    from .setup import commands as stage1_commands
    from .setup import cvae_commands

    stage1_commands.register(sub)
    cvae_commands.register(sub)
    from . import generate_command

    generate_command.register(sub)
    # Trainers are imported only when their subcommand runs; their own parser handles the
    # arguments, including --help (the registry names them without importing them).
    from trainers.commands import TRAINERS

    for name, row in TRAINERS.items():
        sub.add_parser(name, help=row.help, add_help=False)  # listed here; main() dispatches them
    return parser


def _run_trainer(command: str, argv: list[str]) -> int:
    from trainers.commands import run

    return run(command, argv)


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks import get_task, list_tasks

    for name in list_tasks():
        spec = get_task(name)
        print(f"{name:16s} {spec.kind:16s} {spec.domain:10s} {spec.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Spinning OpenMP threads collapse when another process shares the cores (a passive wait
    # hands the core back instead of burning it).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tune_allocator()
    argv = sys.argv[1:] if argv is None else list(argv)
    from trainers.commands import TRAINERS

    if argv and argv[0] in TRAINERS:  # the trainer's own parser takes every argument
        return _run_trainer(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return run_guarded(f"coral {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
