"""Configs and command lines, one way for every command (like cleanrl's ``Args`` and TRL's
``HfArgumentParser``).

A command's settings are one typed dataclass whose fields carry ``metadata={"help": ...}``,
written once: :func:`documented` mirrors the help texts into the class docstring, and
:func:`add_config_arguments` turns every field into a flag (``train_tasks`` ->
``--train-tasks a,b``; booleans get ``--x/--no-x``; ``metadata["choices"]`` limits a value).
A preset is one table per config (:class:`Presets`); ``from_preset(name, **overrides)`` is the
one place that applies it: the table's values, then every override that is not ``None``.
On the command line ``--preset`` is read first and the other flags override the preset's
values (:func:`config_from_args`). :func:`run_guarded` is the one handler of user errors.

This module imports only the standard library, so every layer may import it.

>>> import dataclasses
>>> @documented
... @dataclasses.dataclass
... class Args(Presets):
...     PRESET_VALUES = {"tiny": {"steps": 2}, "cpu": {}, "paper": {"steps": 50}}
...     preset: str = dataclasses.field(default="cpu", metadata={"help": "scale preset"})
...     steps: int = dataclasses.field(default=10, metadata={"help": "optimizer steps"})
>>> Args.from_preset("tiny").steps, Args.from_preset("paper", steps=None).steps
(2, 50)
>>> parser = argparse.ArgumentParser()
>>> add_config_arguments(parser, Args)
>>> config_from_args(Args, parser.parse_args(["--preset", "tiny", "--steps", "7"]))
Args(preset='tiny', steps=7)
>>> print(Args.__doc__.strip().splitlines()[-1].strip())
steps: optimizer steps
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import typing
from types import UnionType
from typing import Any, Callable, ClassVar

PRESETS = ("tiny", "cpu", "paper")
"""Scale presets: ``tiny`` (tests, seconds), ``cpu`` (a laptop, minutes), ``paper`` (GPU)."""

REWARD_MODES = ("binary", "delta", "significant")
"""The env's rewards (``Coral-v0``'s ``reward_mode``), here so configs check them without torch."""

USER_ERRORS = (FileNotFoundError, KeyError, ValueError, ImportError)
"""Errors a user can fix (bad settings, unknown tasks, missing artifacts or optional packages):
their messages carry the fix, so commands print them without a traceback."""


def check_preset(name: str) -> str:
    """``name`` if it is a preset, else a ValueError listing the presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return name


class Presets:
    """Mixin of a config dataclass with per-preset defaults.

    Subclasses set ``PRESET_VALUES = {preset: {field: value}}`` (values are copied, never
    shared) and, when the field that records the preset is not ``preset``, ``PRESET_FIELD``.
    """

    PRESET_VALUES: ClassVar[dict[str, dict[str, Any]]] = {}
    PRESET_FIELD: ClassVar[str] = "preset"

    @classmethod
    def from_preset(cls, name: str = "cpu", **overrides: Any):
        """The preset's values, then the overrides that are not ``None``."""
        check_preset(name)
        values = copy.deepcopy(cls.PRESET_VALUES.get(name, {}))
        values.update({k: v for k, v in overrides.items() if v is not None})
        if cls.PRESET_FIELD:
            values[cls.PRESET_FIELD] = name
        return cls(**values)

    @classmethod
    def preset(cls, name: str = "cpu", **overrides: Any):
        """``from_preset``, under the name the setup and backend configs are called by (a config
        with a ``preset`` field shadows it with the field's default)."""
        return cls.from_preset(name, **overrides)


def documented(config_cls):
    """Class decorator: append each field's ``metadata["help"]`` to the class docstring (fields
    are documented once, in the metadata; the docstring mirrors it, as TRL's configs do)."""
    lines = ["", "    Attributes:"]
    for f in dataclasses.fields(config_cls):
        lines.append(f"        {f.name}: {f.metadata.get('help', '')}")
    config_cls.__doc__ = (config_cls.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
    return config_cls


def help_of(config_cls, name: str) -> str:
    """The help text of one field (to reuse it, not copy it, in another command's flag)."""
    return next(f.metadata.get("help", "") for f in dataclasses.fields(config_cls) if f.name == name)


def csv_list(text: str) -> list[str]:
    """The one list parser: ``"a, b,c"`` -> ``["a", "b", "c"]`` (an empty list is an error)."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names, e.g. arc_easy,piqa")
    return names


def csv_ints(text: str) -> list[int]:
    """``"64,64"`` -> ``[64, 64]``."""
    try:
        return [int(t) for t in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _field_type(hint):
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def add_config_arguments(
    parser: argparse.ArgumentParser, config_cls, *, defaults: Any = False, only: typing.Iterable[str] | None = None
) -> None:
    """One flag per field of ``config_cls`` (or of the fields in ``only``), help from metadata.

    ``defaults=False``: an unset flag is absent from the namespace, so the preset's value
    applies (:func:`config_from_args`); ``--preset`` keeps its default. ``defaults=True``: the
    namespace holds the field defaults (commands without presets). A config instance: its
    values are the defaults, shown in ``--help`` (the preset's, see :func:`run_config_command`).
    """
    hints = typing.get_type_hints(config_cls)
    wanted = set(only) if only is not None else None
    for f in dataclasses.fields(config_cls):
        if wanted is not None and f.name not in wanted:
            continue
        kind = _field_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if isinstance(defaults, config_cls):
            default = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            parser.add_argument(flag, type=kind, required=True, choices=choices, help=help_text)
            continue
        if f.name == "preset":
            parser.add_argument(flag, default=default, choices=PRESETS, help=f"{help_text} (default: %(default)s)")
            continue
        shown = defaults is not False and default is not None and not isinstance(default, bool)
        if shown:
            text = ",".join(map(str, default)) if isinstance(default, list) else default
            help_text += f" (default: {str(text).replace('%', '%%')})"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS if defaults is False else default, "help": help_text}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(kind) in (list, tuple):
            item = typing.get_args(kind)[0]
            parser.add_argument(flag, type=csv_ints if item is int else csv_list, metavar="A,B", **kwargs)
        else:
            parser.add_argument(flag, type=kind, choices=choices, **kwargs)


def config_from_args(config_cls, args: argparse.Namespace):
    """The config of parsed flags: the ``--preset``'s values, overridden by the flags given."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if issubclass(config_cls, Presets):
        return config_cls.from_preset(values.pop("preset", "cpu"), **values)
    return config_cls(**values)


def run_guarded(prog: str, handler: Callable[[], int]) -> int:
    """Run a command; a user error prints ``prog: error: message`` (no traceback) and returns 2."""
    try:
        return handler()
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def run_config_command(
    config_cls, main: Callable[[Any], int], argv: list[str] | None, prog: str, description: str
) -> int:
    """Parse ``argv`` into ``config_cls`` and run ``main(config)`` under :func:`run_guarded`.

    ``--preset`` is parsed first; the other flags then default to (and ``--help`` shows) that
    preset's values."""
    defaults: Any = True
    if issubclass(config_cls, Presets):
        first = argparse.ArgumentParser(prog=prog, add_help=False)
        first.add_argument("--preset", default="cpu", choices=PRESETS)
        defaults = config_cls.from_preset(first.parse_known_args(argv)[0].preset)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_config_arguments(parser, config_cls, defaults=defaults)
    args = parser.parse_args(argv)
    return run_guarded(prog, lambda: main(config_from_args(config_cls, args)))
