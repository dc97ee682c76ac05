"""The trainer commands: ``coral restem``, ``coral sb3``, ``coral demo`` and ``coral report``.

Each is one row of ``TRAINERS``: its config dataclass and its command function, named as
``"module:attribute"`` and imported only when the command runs (``coral --help`` stays
instant). Adding a trainer is its module (a config dataclass with help per field, and
``command(config) -> int``) plus one row here. Flags come from the config's fields
(:func:`coral_env.config.add_config_arguments`); flags left out take the ``--preset``'s values.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from coral_env.config import add_config_arguments, config_from_args, run_config_command, run_guarded

__all__ = ["TRAINERS", "TrainerCommand", "config_from_args", "register", "run"]


@dataclass(frozen=True)
class TrainerCommand:
    """One trainer command: what ``coral --help`` says, and where its config and body live."""

    config: str  # "module:ConfigClass", a dataclass with metadata["help"] per field
    command: str  # "module:function", function(config) -> exit code
    help: str  # one line for `coral --help`
    description: str  # the command's --help

    def load(self) -> tuple[type, object]:
        """(config class, command function), imported now."""
        loaded = []
        for target in (self.config, self.command):
            module, _, attr = target.partition(":")
            loaded.append(getattr(importlib.import_module(module), attr))
        return loaded[0], loaded[1]


TRAINERS: dict[str, TrainerCommand] = {
    "restem": TrainerCommand(
        "trainers.restem:RestemConfig",
        "trainers.restem:command",
        "train the LLM policy with ReST^EM (resumable; see coral restem --help)",
        "Train the LLM policy with ReST^EM: sample K strategies per training task, keep the rewarded "
        "ones, fine-tune a LoRA on them (TRL SFT), evaluate on held-out tasks; repeat. Resumes from --out.",
    ),
    "sb3": TrainerCommand(
        "trainers.sb3:SB3Config",
        "trainers.sb3:command",
        "train a stable-baselines3 agent on the wrapped env (see coral sb3 --help)",
        "Train a stable-baselines3 agent (ppo, a2c, dqn, maskable_ppo) on the wrapped Coral env over the "
        "training tasks; save it as safetensors + JSON; evaluate on held-out tasks.",
    ),
    "grpo": TrainerCommand(
        "trainers.grpo:GrpoConfig",
        "trainers.grpo:command",
        "train the LLM policy with TRL's GRPO, rewards from the env (see coral grpo --help)",
        "Train the LLM policy with GRPO (TRL's GRPOTrainer, LoRA on the policy): each sampled strategy is "
        "executed in Coral-v0 and the env's reward (0 for invalid JSON) drives the update; then evaluate on "
        "held-out tasks as ReST^EM does. Resumes from TRL checkpoints under --out.",
    ),
    "demo": TrainerCommand(
        "trainers.demo:DemoConfig",
        "trainers.demo:command",
        "the whole pipeline end to end on built-in tasks, then the report (the main job)",
        "Run the whole pipeline end to end and write a report: collect checkpoints, train the generator "
        "and the CVAE, run the zero-shot LLM policy, one ReST^EM iteration, the baselines, then `coral "
        "report`. Offline on built-in synthetic tasks by default; --data-dir switches to the benchmarks. "
        "Resumes from --out.",
    ),
    "report": TrainerCommand(
        "trainers.report:ReportArgs",
        "trainers.report:command",
        "Table 2 and figures from a run folder (see coral report --help)",
        "Write report.md (the papers' Table 2 layout: methods x tasks, in-domain / out-of-domain "
        "averages, 95% CIs) and PNG figures (agent contribution, strategy choice) from a run folder "
        "written by `coral demo`.",
    ),
}


def register(subparsers, names: tuple[str, ...] = ("restem", "sb3")) -> None:
    """Add trainer commands to an argparse subparsers object (the handler is ``args.func``)."""
    for name in names:
        row = TRAINERS[name]
        config_cls, command = row.load()
        parser = subparsers.add_parser(name, help=row.help, description=row.description)
        add_config_arguments(parser, config_cls, defaults=not hasattr(config_cls, "from_preset"))
        parser.set_defaults(func=lambda args, c=config_cls, f=command: f(config_from_args(c, args)))


def run(command: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` for ``command`` and run it (``coral restem ARGS...`` -> ``run("restem", ARGS)``).
    Errors a user can fix (bad settings, unknown tasks, missing artifacts) print one line and
    return 2."""
    if command not in TRAINERS:
        raise ValueError(f"unknown trainer command {command!r}; choose one of {', '.join(TRAINERS)}")
    prog = prog or f"coral {command}"
    row = TRAINERS[command]
    loaded = run_guarded(prog, row.load)  # sb3-contrib or TRL missing: one line, exit 2
    if isinstance(loaded, int):
        return loaded
    config_cls, body = loaded
    return run_config_command(config_cls, body, argv, prog, row.description)
