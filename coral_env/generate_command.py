"""``coral generate``: a generated (and aligned) adapter written as a PEFT folder.

The parser is built without importing torch (``coral --help`` stays fast); the handler imports
``coral_env.env.export``, which does the work.
"""

from __future__ import annotations

import argparse


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .env.export import generate_adapter, read_prompts, save_runtime_adapter
    from .env.runtime import CoralRuntime, EnvConfig
    from .tasks import resolve_task

    if (args.task is None) == (args.prompts is None):
        raise ValueError("give exactly one of --task T or --prompts FILE")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads} (leave it out for torch's default)")
    prompts = read_prompts(args.prompts) if args.prompts else None
    task = resolve_task(args.task) if args.task else None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = EnvConfig(
        preset=args.preset,
        model=args.model,
        artifacts=args.artifacts,
        data_dir=args.data_dir,
        split_seed=args.split_seed,
        use_alignment=args.align,
    )
    runtime = CoralRuntime.get(config)
    vector, info = generate_adapter(runtime, task, prompts, align=args.align)
    out = save_runtime_adapter(runtime, vector, args.out, info | {"split_seed": args.split_seed})
    print(f"{info['source']} adapter ({vector.numel()} weights, base {runtime.backend.model}) -> {out}")
    print(f"load it with: peft.PeftModel.from_pretrained(base_model, {str(out)!r})")
    return 0


def register(sub) -> None:
    """Add ``coral generate`` to the ``coral`` subparsers."""
    from .setup.artifacts import default_artifacts_root

    p = sub.add_parser(
        "generate",
        help="write a generated (and aligned) adapter as a PEFT folder",
        description="Generate a LoRA adapter from a task's support prompts (--task, the env's starting "
        "adapter) or from your prompts (--prompts FILE, one a line) with the trained generator, "
        "optionally aligned by the CVAE (--align), and write it as a PEFT adapter folder "
        "(adapter_config.json + adapter_model.safetensors) that "
        "peft.PeftModel.from_pretrained(base_model, OUT) loads.",
        epilog="example:\n  coral generate --preset cpu --task arc_easy --align --out adapters/arc_easy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--task", default=None, help="task name or task config path: its support prompts condition the generator"
    )
    what.add_argument(
        "--prompts", default=None, help="text file, one prompt a line (uses the generator trained on all setup tasks)"
    )
    p.add_argument("--out", required=True, help="adapter folder to write (replaced if it is an adapter folder)")
    p.add_argument("--align", action="store_true", help="align the adapter with the CVAE (as the env does)")
    p.add_argument(
        "--preset", default="cpu", choices=["tiny", "cpu", "paper"], help="scale preset (default: %(default)s)"
    )
    p.add_argument(
        "--artifacts",
        default=str(default_artifacts_root()),
        help="artifacts root of `coral setup` (default: %(default)s)",
    )
    p.add_argument("--model", default=None, help="override the preset's model (must match the artifacts)")
    p.add_argument("--data-dir", default=None, help="benchmark JSONL folder")
    p.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="task split seed (which support prompts); must match the artifacts' (default: %(default)s)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_generate)
