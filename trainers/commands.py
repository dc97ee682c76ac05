"""CLI subcommands ``coral restem``, ``coral sb3``, ``coral demo`` and ``coral report`` (and the
``python -m trainers.*`` entry points).

``register(subparsers)`` adds both to the ``coral`` parser. Every config field becomes a flag
(``train_tasks`` -> ``--train-tasks a,b``; booleans get ``--x/--no-x``) whose help is the
field's ``metadata["help"]``; flags left out take the ``--preset``'s defaults. The trainers'
heavy libraries are imported only when a subcommand runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from types import UnionType


def documented(config_cls):
    """Class decorator: append each field's ``metadata["help"]`` to the class docstring (TRL-style
    configs document every field once, in the metadata, and the docstring mirrors it)."""
    lines = ["", "    Attributes:"]
    for f in dataclasses.fields(config_cls):
        lines.append(f"        {f.name}: {f.metadata.get('help', '')}")
    config_cls.__doc__ = (config_cls.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
    return config_cls


def _csv(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _csv_ints(text: str) -> list[int]:
    return [int(t) for t in _csv(text)]


def add_config_arguments(parser: argparse.ArgumentParser, config_cls) -> None:
    """One flag per dataclass field; unset flags are absent from the namespace (preset defaults apply)."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind = hints[f.name]
        if isinstance(kind, UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.name == "preset":
            parser.add_argument(flag, default="cpu", choices=["tiny", "cpu", "paper"],
                                help=help_text + " (default: %(default)s)")
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        elif typing.get_origin(kind) is list:
            item = typing.get_args(kind)[0]
            parser.add_argument(flag, type=_csv_ints if item is int else _csv, default=argparse.SUPPRESS,
                                metavar="A,B", help=help_text + " (comma-separated)")
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def config_from_args(config_cls, args: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(config_cls)} - {"preset"}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return config_cls.from_preset(args.preset, **overrides)


def restem_parser(prog: str | None = None, parser: argparse.ArgumentParser | None = None):
    from .restem import RestemConfig

    parser = parser or argparse.ArgumentParser(prog=prog)
    parser.description = ("Train the LLM policy with ReST^EM: sample K strategies per training task, keep the "
                          "rewarded ones, fine-tune a LoRA on them (TRL SFT), evaluate on held-out tasks; "
                          "repeat. Resumes from --out.")
    add_config_arguments(parser, RestemConfig)
    parser.set_defaults(func=run_restem_command)
    return parser


def sb3_parser(prog: str | None = None, parser: argparse.ArgumentParser | None = None):
    from .sb3 import SB3Config

    parser = parser or argparse.ArgumentParser(prog=prog)
    parser.description = ("Train a stable-baselines3 agent (ppo, a2c, dqn, maskable_ppo) on the wrapped Coral "
                          "env over the training tasks; save it as safetensors + JSON; evaluate on held-out tasks.")
    add_config_arguments(parser, SB3Config)
    parser.set_defaults(func=run_sb3_command)
    return parser


def demo_parser(prog: str | None = None, parser: argparse.ArgumentParser | None = None):
    from .demo import DemoConfig

    parser = parser or argparse.ArgumentParser(prog=prog)
    parser.description = ("Run the whole pipeline end to end and write a report: collect checkpoints, train the "
                          "generator and the CVAE, run the zero-shot LLM policy, one ReST^EM iteration, the "
                          "baselines, then `coral report`. Offline on built-in synthetic tasks by default; "
                          "--data-dir switches to the benchmarks. Resumes from --out.")
    add_config_arguments(parser, DemoConfig)
    parser.set_defaults(func=run_demo_command)
    return parser


def report_parser(prog: str | None = None, parser: argparse.ArgumentParser | None = None):
    parser = parser or argparse.ArgumentParser(prog=prog)
    parser.description = ("Write report.md (the papers' Table 2 layout: methods x tasks, in-domain / "
                          "out-of-domain averages, 95% CIs) and PNG figures (agent contribution, strategy "
                          "choice) from a run folder written by `coral demo`.")
    parser.add_argument("--run", default="runs/demo", help="run folder (default: %(default)s)")
    parser.add_argument("--out", default=None, help="where to write the report (default: the run folder)")
    parser.add_argument("--title", default="Coral results", help="report title")
    parser.set_defaults(func=run_report_command)
    return parser


def run_demo_command(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    report = run_demo(config_from_args(DemoConfig, args))
    print(report.read_text())
    print(f"report: {report} (figures beside it)")
    return 0


def run_report_command(args: argparse.Namespace) -> int:
    from .report import write_report

    report = write_report(args.run, args.out, title=args.title)
    print(report.read_text())
    print(f"report: {report}")
    return 0


def run_restem_command(args: argparse.Namespace) -> int:
    from .evaluation import comparison_table, family_table
    from .restem import RestemConfig, train_restem

    config = config_from_args(RestemConfig, args)
    result = train_restem(config)
    print(comparison_table(result["summaries"]))
    print()
    print(family_table(result["summaries"]))
    for it in result["iterations"]:
        print(f"iteration {it['iteration']}: kept {json.dumps(it['kept'])}; sft "
              f"{'skipped' if it['sft'].get('skipped') else str(it['sft'].get('steps')) + ' steps'}; "
              f"policy {it['policy_adapter']}")
    return 0


def run_sb3_command(args: argparse.Namespace) -> int:
    from .evaluation import comparison_table, family_table
    from .sb3 import SB3Config, train_sb3

    result = train_sb3(config_from_args(SB3Config, args))
    print(comparison_table([result["summary"]]))
    print()
    print(family_table([result["summary"]]))
    print(f"policy saved to {result['policy_dir']}")
    return 0


def register(subparsers) -> None:
    """Add ``restem`` and ``sb3`` to an argparse subparsers object (the handler is ``args.func``)."""
    restem_parser(parser=subparsers.add_parser(
        "restem", help="train the LLM policy with ReST^EM (resumable)"))
    sb3_parser(parser=subparsers.add_parser(
        "sb3", help="train a stable-baselines3 agent on the wrapped env"))


def run(command: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` for ``command`` (``restem``, ``sb3``, ``demo`` or ``report``) and run it: for a CLI that defers even
    the parser to the handler (``coral restem ARGS...`` -> ``run("restem", ARGS)``). Errors a user
    can fix (bad settings, unknown tasks, missing artifacts) print one line and return 2."""
    import sys

    builders = {"restem": restem_parser, "sb3": sb3_parser, "demo": demo_parser, "report": report_parser}
    if command not in builders:
        raise ValueError(f"unknown trainer command {command!r}; choose one of {', '.join(builders)}")
    args = builders[command](prog or f"coral {command}").parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, KeyError, ValueError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"{prog or 'coral ' + command}: error: {message}", file=sys.stderr)
        return 2
