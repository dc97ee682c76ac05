"""The strategy schema: the family table and the strategy dataclasses built from it.

One table (``FAMILIES``) lists the four strategy families of the CORAL paper (Appendix E): per
family its runner (``"module:function"``, as Gymnasium's ``entry_point``), plot colour and help,
and per field its JSON name, type, range, default, aliases and a one-line meaning. Everything
else is derived from it: the frozen dataclasses' defaults and validation, the parser
(:mod:`.parse`), the runners (:mod:`.runners` resolves them at import and fails there on a
mismatch), the family order and colours of the plots, and (in :mod:`.schema_views`) the JSON
Schema, the policy prompt, the discrete catalogue, the ``MultiDiscrete`` encoding and the
random sampler. Adding a family is one row here, its dataclass below, and its runner module.

An action comes from a sampled LLM, so it is untrusted: every numeric field has a range that
bounds its cost, and out-of-range values are rejected (never clipped). Value coercion and the
error type live in :mod:`.values`, the parser in :mod:`.parse`, JSON extraction from free text
in :mod:`.extract`; their public names are re-exported here, so ``schema.parse_strategy`` works.

>>> [f.name for f in FAMILIES]
['TTL', 'LORA', 'TTS', 'Latent']
>>> family_spec("slot").runner
'coral_env.strategies.latent:run'

This module imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Union

from .values import MAX_ACTION_CHARS as MAX_ACTION_CHARS  # re-exported: part of the contract
from .values import Problem, StrategyValidationError, coerce_value, error_from, fmt_number, show

FAMILY_KEY = "family"
FAMILY_KEY_ALIASES = ("strategy",)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """One field of a family. ``bins`` are the values of the factored MultiDiscrete encoding;
    ``grid`` (a subset of ``bins``; empty means just the default) is what the catalogue uses."""

    name: str
    kind: str  # "int" | "float" | "bool" | "enum"
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[str, ...] = ()
    choice_help: tuple[tuple[str, str, str], ...] = ()  # (choice, group, meaning)
    aliases: tuple[str, ...] = ()
    bins: tuple = ()
    grid: tuple = ()
    attr: str = ""  # Python attribute name when ``name`` is not an identifier ("lambda")

    @property
    def attribute(self) -> str:
        return self.attr or self.name

    @property
    def catalogue_values(self) -> tuple:
        return self.grid or (self.default,)

    def allowed(self) -> str:
        """Human description of the allowed values, e.g. 'an integer from 1 to 50'."""
        if self.kind == "int":
            return f"an integer from {fmt_number(self.low)} to {fmt_number(self.high)}"
        if self.kind == "float":
            scale = ", log scale" if self.log else ""
            return f"a number from {fmt_number(self.low)} to {fmt_number(self.high)}{scale}"
        if self.kind == "bool":
            return "true or false"
        return "one of " + ", ".join(self.choices)


@dataclass(frozen=True)
class FamilySpec:
    """One strategy family: its name, its runner and its fields.

    ``runner`` is ``"module:function"``; the function takes ``(strategy, StrategyContext,
    examples)`` and returns a ``StrategyOutcome`` (:mod:`.runners` imports it).
    """

    name: str  # canonical family name
    title: str  # as in the paper's prompt, e.g. "Test-Time Scaling (TTS)"
    help: str
    runner: str  # "module:function", e.g. "coral_env.strategies.ttl:run"
    color: str  # matplotlib colour of the family in plots
    fields: tuple[FieldSpec, ...]
    aliases: tuple[str, ...] = ()
    # CORAL App. E's "Example Configuration" of the family, as (field, value); kept in the catalogue.
    paper_example: tuple[tuple[str, Any], ...] = ()

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"family {self.name} has no field {name!r}")

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        name="TTL",
        runner="coral_env.strategies.ttl:run",
        color="#4c72b0",
        title="Test-Time Learning (TTL)",
        aliases=("TTT",),
        help="fine-tune the adapter on the task's unlabeled inputs by minimising their "
        "perplexity (uncertain, high-perplexity inputs weigh most)",
        paper_example=(("ttl_steps", 25), ("learning_rate", 1e-5), ("batch_size", 4)),
        fields=(
            FieldSpec(
                "ttl_steps",
                "int",
                10,
                "number of optimisation steps",
                low=1,
                high=50,
                bins=(1, 5, 10, 25, 50),
                grid=(5, 10, 25),
            ),
            FieldSpec(
                "learning_rate",
                "float",
                1e-4,
                "optimizer learning rate",
                low=1e-7,
                high=1e-2,
                log=True,
                bins=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
                # 1e-5: the paper's; 1e-2: the only rate that moved predictions in the landscape
                grid=(1e-5, 1e-3, 1e-2),
            ),
            FieldSpec("batch_size", "int", 4, "test inputs per update", low=1, high=32, bins=(1, 4, 8, 16)),
            FieldSpec("shuffle_data", "bool", True, "whether to shuffle the test inputs", bins=(False, True)),
        ),
    ),
    FamilySpec(
        name="LORA",
        runner="coral_env.strategies.lora_mix:run",
        color="#dd8452",
        title="LoRA Modification (LORA)",
        help="mix the adapter's two rank halves (two-subspace mixing); no training",
        paper_example=(("lambda", 0.5),),
        fields=(
            FieldSpec(
                "lambda",
                "float",
                0.5,
                "mixing ratio between the two subspaces (0 leaves the adapter unchanged)",
                low=0.0,
                high=1.0,
                aliases=("lambda_",),
                attr="lambda_",
                bins=(0.0, 0.25, 0.5, 0.75, 1.0),
                grid=(0.0, 0.25, 0.5, 0.75, 1.0),
            ),
        ),
    ),
    FamilySpec(
        name="TTS",
        runner="coral_env.strategies.tts:run",
        color="#55a868",
        title="Test-Time Scaling (TTS)",
        help="sample several prompt batches from the task, generate one adapter per batch, "
        "then route each question to one adapter or ensemble them all",
        paper_example=(("num_prompt_batches", 20), ("method", "max_confidence")),
        fields=(
            FieldSpec(
                "num_prompt_batches",
                "int",
                4,
                "prompt batches (one adapter each) sampled from the task",
                low=1,
                high=20,
                bins=(1, 4, 8, 20),
                grid=(4, 20),
            ),
            FieldSpec(
                "method",
                "enum",
                "max_confidence",
                "how the adapters answer",
                choices=("avg_sim_score", "avg_prompt_embed", "max_confidence", "majority_vote", "sum_logprobs"),
                choice_help=(
                    ("avg_sim_score", "routing", "use the batch whose prompts are closest to the question on average"),
                    (
                        "avg_prompt_embed",
                        "routing",
                        "use the batch whose mean prompt embedding is closest to the question",
                    ),
                    ("max_confidence", "ensemble", "answer of the most confident adapter"),
                    ("majority_vote", "ensemble", "majority vote across adapters"),
                    ("sum_logprobs", "ensemble", "sum each choice's log-probability across adapters"),
                ),
                bins=("avg_sim_score", "avg_prompt_embed", "max_confidence", "majority_vote", "sum_logprobs"),
                grid=("avg_sim_score", "avg_prompt_embed", "max_confidence", "majority_vote", "sum_logprobs"),
            ),
        ),
    ),
    FamilySpec(
        name="Latent",
        runner="coral_env.strategies.latent:run",
        color="#c44e52",
        title="Latent Space Modification (Latent)",
        aliases=("SLOT",),
        help="per question, optimise a small vector added to the final hidden state on "
        "the prompt's own next-token loss, then answer with it; no weights change",
        paper_example=(("slot_steps", 5), ("slot_lr", 0.1)),
        fields=(
            FieldSpec(
                "slot_steps",
                "int",
                5,
                "optimisation steps per question (0 changes nothing)",
                low=0,
                high=20,
                aliases=("times",),
                bins=(1, 2, 5, 10, 20),
                grid=(2, 5, 10),
            ),
            FieldSpec(
                "slot_lr",
                "float",
                0.01,
                "learning rate of the per-question vector",
                low=1e-4,
                high=1.0,
                log=True,
                aliases=("learning_rate",),
                bins=(0.001, 0.01, 0.1, 0.5),
                grid=(0.01, 0.1),
            ),
        ),
    ),
)

FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)
_FAMILY_BY_NAME = {f.name: f for f in FAMILIES}
_FAMILY_LOOKUP = {a.casefold(): f.name for f in FAMILIES for a in (f.name, *f.aliases)}

_method = _FAMILY_BY_NAME["TTS"].field("method")
TTS_METHODS: tuple[str, ...] = _method.choices
ROUTING_METHODS: tuple[str, ...] = tuple(c for c, g, _ in _method.choice_help if g == "routing")
ENSEMBLE_METHODS: tuple[str, ...] = tuple(c for c, g, _ in _method.choice_help if g == "ensemble")


def family_spec(name: str) -> FamilySpec:
    """The table entry of a family, by canonical name or alias (case-insensitive)."""
    canonical = _FAMILY_LOOKUP.get(str(name).strip().casefold())
    if canonical is None:
        raise StrategyValidationError(unknown_family_text(name), field=FAMILY_KEY, value=name)
    return _FAMILY_BY_NAME[canonical]


def families_text() -> str:
    """The allowed family names and aliases, for error messages."""
    parts = []
    for f in FAMILIES:
        alias = f" (also {', '.join(f.aliases)})" if f.aliases else ""
        parts.append(f"{f.name}{alias}")
    return ", ".join(parts) + " (case-insensitive)"


def unknown_family_text(given: Any) -> str:
    """The error text for an unknown family name, with a "did you mean" hint."""
    hint = ""
    if isinstance(given, str):
        close = difflib.get_close_matches(given.strip().casefold(), list(_FAMILY_LOOKUP), n=1)
        if close:
            hint = f" Did you mean {_FAMILY_LOOKUP[close[0]]!r}?"
    return (
        f"unknown strategy family {show(given)}.{hint} Allowed families: {families_text()}. "
        f'Fix: set "{FAMILY_KEY}" to one of {", ".join(FAMILY_NAMES)}.'
    )


# --------------------------------------------------------------------------------------------
# Strategy dataclasses
# --------------------------------------------------------------------------------------------


def _default(family: str, name: str) -> Any:
    return _FAMILY_BY_NAME[family].field(name).default


class BaseStrategy:
    """Shared behaviour of the four frozen strategy dataclasses (validated on construction)."""

    family: ClassVar[str]

    @classmethod
    def spec(cls) -> FamilySpec:
        return _FAMILY_BY_NAME[cls.family]

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        for spec in self.spec().fields:
            try:
                value, _ = coerce_value(self.family, spec, getattr(self, spec.attribute))
            except Problem as p:
                problems.append(p)
                continue
            object.__setattr__(self, spec.attribute, value)
        if problems:
            raise error_from(problems, self.family)

    def canonical(self) -> dict[str, Any]:
        """Canonical family name and every field (JSON names), as plain Python values."""
        out: dict[str, Any] = {FAMILY_KEY: self.family}
        for spec in self.spec().fields:
            out[spec.name] = getattr(self, spec.attribute)
        return out

    def canonical_json(self) -> str:
        """Sorted-key compact JSON; equal strategies give equal strings (memo keys)."""
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def to_json(self, indent: int | None = None) -> str:
        """Readable JSON in table field order ("family" first), e.g. for SFT targets."""
        return json.dumps(self.canonical(), indent=indent)

    def replace(self, **changes: Any) -> "Strategy":
        """A copy with some fields changed (Python attribute names), validated again."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class TTLStrategy(BaseStrategy):
    """Test-time learning (the paper also writes TTT)."""

    family: ClassVar[str] = "TTL"
    ttl_steps: int = _default("TTL", "ttl_steps")
    learning_rate: float = _default("TTL", "learning_rate")
    batch_size: int = _default("TTL", "batch_size")
    shuffle_data: bool = _default("TTL", "shuffle_data")


@dataclass(frozen=True)
class LoRAStrategy(BaseStrategy):
    """Two-subspace LoRA mixing; ``lambda_`` is the JSON field "lambda" (0 = no-op)."""

    family: ClassVar[str] = "LORA"
    lambda_: float = _default("LORA", "lambda")


@dataclass(frozen=True)
class TTSStrategy(BaseStrategy):
    """Test-time scaling: routing (M1/M2) or ensembling over per-batch adapters."""

    family: ClassVar[str] = "TTS"
    num_prompt_batches: int = _default("TTS", "num_prompt_batches")
    method: str = _default("TTS", "method")

    @property
    def is_routing(self) -> bool:
        return self.method in ROUTING_METHODS

    @property
    def is_ensemble(self) -> bool:
        return self.method in ENSEMBLE_METHODS


@dataclass(frozen=True)
class LatentStrategy(BaseStrategy):
    """SLOT latent-space modification (DeGAML writes ``times`` and ``learning_rate``)."""

    family: ClassVar[str] = "Latent"
    slot_steps: int = _default("Latent", "slot_steps")
    slot_lr: float = _default("Latent", "slot_lr")


Strategy = Union[TTLStrategy, LoRAStrategy, TTSStrategy, LatentStrategy]
STRATEGY_CLASSES: dict[str, type] = {c.family: c for c in (TTLStrategy, LoRAStrategy, TTSStrategy, LatentStrategy)}


def strategy_class(family: str) -> type:
    """The dataclass of a family (canonical name or alias)."""
    return STRATEGY_CLASSES[family_spec(family).name]


def default_strategy(family: str) -> Strategy:
    """A family's strategy with every field at its default."""
    return strategy_class(family)()


_RUNNER_FORMAT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def _check_table() -> None:
    """Developer guard, run at import: the table is self-consistent (raises RuntimeError)."""

    def require(ok: bool, what: str) -> None:
        if not ok:
            raise RuntimeError(f"strategy table: {what}")

    require(set(STRATEGY_CLASSES) == set(FAMILY_NAMES), "one dataclass per family")
    for fam in FAMILIES:
        attrs = [f.name for f in dataclasses.fields(STRATEGY_CLASSES[fam.name])]
        require(attrs == [f.attribute for f in fam.fields], f"{fam.name} dataclass fields")
        names = [n for f in fam.fields for n in (f.name, *f.aliases)]
        require(
            len(names) == len(set(names)) and FAMILY_KEY not in names,
            f"{fam.name} field names and aliases must be distinct",
        )
        for f in fam.fields:
            for v in (f.default, *f.bins, *f.grid):
                try:
                    canonical, _ = coerce_value(fam.name, f, v)
                except Problem as p:
                    raise RuntimeError(f"strategy table: {p.text}") from None
                require(
                    canonical == v and type(canonical) is type(v),
                    f"{fam.name}.{f.name} value {v!r} must be written in canonical type",
                )
            require(
                f.default in f.bins and set(f.catalogue_values) <= set(f.bins),
                f"{fam.name}.{f.name}: default and grid must be among the bins",
            )
            if f.kind == "enum":
                require(
                    tuple(c for c, _, _ in f.choice_help) == f.choices,
                    f"{fam.name}.{f.name} choice_help must follow choices",
                )
        for name, value in fam.paper_example:
            require(
                value in fam.field(name).catalogue_values,
                f"{fam.name}: the paper's example {name}={value!r} must stay in the catalogue grid",
            )
        require(
            _RUNNER_FORMAT.fullmatch(fam.runner) is not None,
            f"{fam.name} runner {fam.runner!r} must read 'package.module:function'",
        )
    require(set(ROUTING_METHODS) | set(ENSEMBLE_METHODS) == set(TTS_METHODS), "TTS groups")


_check_table()


_LAZY = {"ParsedStrategy": "parse", "parse_strategy": "parse", "extract_json": "extract"}


def __getattr__(name: str) -> Any:
    """``schema.parse_strategy`` and friends, re-exported lazily (they import this module)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
