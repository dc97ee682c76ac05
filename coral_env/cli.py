"""The ``coral`` command.

Subcommands import what they need inside their handlers, so ``coral --help`` is instant and
trainers are only imported by the subcommands that run them (SPEC section 8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .allocator import tune_allocator


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="tiny, an offline name (smollm2-135m-instruct, qwen2.5-coder-0.5b-instruct), "
                        "a .gguf file, a model folder, or a Hub id (default: %(default)s)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 where supported), bf16, fp16, fp32")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder of benchmark JSONL files (default: $CORAL_DATA_DIR, else ../shared/datasets)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model (optionally with an adapter) on one task split."""
    import torch

    from .backend.evaluator import evaluate
    from .backend.models import load_model
    from .backend.lora import AdapterLayout, attach_lora, load_adapter, state_for_layout
    from .tasks import SplitSizes, load_task

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.threads:
        torch.set_num_threads(args.threads)
    test_size = max(args.test_size, args.limit or 0) if args.split == "test" else args.test_size
    splits = load_task(args.task, args.data_dir, seed=args.seed, sizes=SplitSizes(test=test_size))
    examples = splits.split(args.split)
    if args.limit is not None:
        examples = examples[:args.limit]
    model, tokenizer = load_model(args.model, args.dtype, args.device)
    if args.adapter:
        loaded = load_adapter(args.adapter)
        model = attach_lora(model, loaded.spec)
        layout = AdapterLayout.from_model(model)
        layout.set_flat(state_for_layout(layout, loaded.state))
    result = evaluate(model, tokenizer, examples, task=args.task, style=args.style)
    summary = result.summary() | {"model": args.model, "split": args.split,
                                  "adapter": args.adapter, "style": args.style}
    if args.json:
        print(json.dumps(summary))
    else:
        lo, hi = result.ci95
        print(f"{args.task} [{args.split}, n={result.n}] accuracy {result.accuracy:.4f} "
              f"(95% CI {lo:.4f}-{hi:.4f})")
        for name in ("acc_norm", "balanced_accuracy", "auc"):
            if name in summary:
                print(f"  {name}: {summary[name]:.4f}")
        print(f"  {result.seconds:.1f} s")
    return 0


TRAINER_COMMANDS = {"restem": "train the LLM policy with ReST^EM (resumable; see coral restem --help)",
                    "sb3": "train a stable-baselines3 agent on the wrapped env (see coral sb3 --help)",
                    "demo": "the whole pipeline end to end on built-in tasks, then the report (the main job)",
                    "report": "Table 2 and figures from a run folder (see coral report --help)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coral", description="Coral: LLM adaptation as a reinforcement-learning problem "
                                  "(generator -> CVAE alignment -> strategy policy).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="evaluate a model (and adapter) on a task split",
                       description="Evaluate a model on a task: accuracy with a 95% Wilson CI "
                                   "(plus acc_norm; balanced accuracy and AUC for two-answer tasks).")
    _add_model_args(p)
    _add_data_args(p)
    p.add_argument("--task", required=True, help="task name (see `coral tasks`)")
    p.add_argument("--split", default="test", choices=["train", "support", "validation", "test"])
    p.add_argument("--limit", type=int, default=None, help="first N examples of the split")
    p.add_argument("--test-size", type=int, default=300,
                   help="test split size (default: %(default)s; raised to --limit when that is larger)")
    p.add_argument("--adapter", default=None, help="a PEFT adapter folder to apply")
    p.add_argument("--style", default="plain", choices=["plain", "chat"],
                   help="prompt style: plain (lm-eval-harness format) or chat (chat template)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("tasks", help="list the known tasks")
    p.set_defaults(func=cmd_tasks)

    from .setup import commands as stage1_commands, cvae_commands

    stage1_commands.register(sub)
    cvae_commands.register(sub)
    # Trainers are imported only when their subcommand runs (SPEC section 8); their own parser
    # handles the arguments, including --help.
    for name, text in TRAINER_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)  # listed here; main() dispatches them
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
    # Spinning OpenMP threads collapse when another process shares the cores (PERF-NOTES.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tune_allocator()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TRAINER_COMMANDS:  # the trainer's own parser takes every argument
        return _run_trainer(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        # Known user errors carry their own fix; print them without a traceback.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"coral {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
