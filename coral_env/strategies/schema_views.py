"""Everything generated from the strategy table in :mod:`coral_env.strategies.schema`.

The JSON Schema, the policy prompt text, the discrete catalogue (SB3 ``Discrete``), the factored
``MultiDiscrete`` encoding with masks, and the random sampler. No range, default or choice is
written here: each is read from ``FAMILIES``. numpy is imported lazily (masks, vectors, numpy
generators) so that importing this module stays cheap.
"""

from __future__ import annotations

import itertools
import math
import numbers
import random
from functools import lru_cache
from typing import Any, Sequence

from .schema import (
    FAMILIES,
    FAMILY_KEY,
    FAMILY_NAMES,
    STRATEGY_CLASSES,
    BaseStrategy,
    FamilySpec,
    FieldSpec,
    Strategy,
    StrategyValidationError,
    fmt_number,
)

JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"


# --------------------------------------------------------------------------------------------
# JSON Schema
# --------------------------------------------------------------------------------------------


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"description": spec.help, "default": spec.default}
    if spec.kind in ("int", "float"):
        out["type"] = "integer" if spec.kind == "int" else "number"
        out["minimum"], out["maximum"] = spec.low, spec.high
        if spec.log:
            out["description"] += " (log scale)"
    elif spec.kind == "bool":
        out["type"] = "boolean"
    else:
        out["type"] = "string"
        out["enum"] = list(spec.choices)
    return out


def json_schema(strict: bool = False) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a canonical strategy: ``oneOf`` one object per family.

    With ``strict=False`` only ``"family"`` is required (missing fields take their defaults);
    ``strict=True`` requires every field (e.g. for constrained decoding). The schema describes
    canonical spellings; :func:`parse_strategy` also accepts the aliases the table lists.
    """
    variants = []
    for fam in FAMILIES:
        props: dict[str, Any] = {FAMILY_KEY: {"const": fam.name, "description": fam.help}}
        for spec in fam.fields:
            props[spec.name] = _field_schema(spec)
        required = [FAMILY_KEY] + ([s.name for s in fam.fields] if strict else [])
        variants.append(
            {
                "title": fam.title,
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": False,
            }
        )
    return {
        "$schema": JSON_SCHEMA_DRAFT,
        "$id": "coral_env/strategy.schema.json",
        "title": "Coral adaptation strategy",
        "description": "One strategy of the four CORAL families: " + ", ".join(FAMILY_NAMES),
        "oneOf": variants,
    }


# --------------------------------------------------------------------------------------------
# Policy prompt (paper, Appendix E.6)
# --------------------------------------------------------------------------------------------

POLICY_SYSTEM_PROMPT = (
    "You are an expert AI agent tasked with generating an optimal adaptation strategy for a "
    "Large Language Model to improve its performance on a new, unseen task. Your goal is to "
    "output a single, structured JSON object that specifies the most promising strategy."
)

_PLACEHOLDER = {"int": "<integer>", "float": "<float>", "bool": "<boolean>"}


def _field_line(spec: FieldSpec) -> str:
    default = spec.default if not isinstance(spec.default, bool) else str(spec.default).lower()
    if spec.kind == "enum":
        text = f"- {spec.name}: one of {' | '.join(spec.choices)} (default {default}); {spec.help}:"
        for choice, group, meaning in spec.choice_help:
            text += f"\n    {choice} ({group}): {meaning}"
        return text
    kind = {"int": "integer", "float": "float", "bool": "boolean"}[spec.kind]
    if spec.kind == "bool":
        rng = "true or false"
    else:
        rng = f"from {fmt_number(spec.low)} to {fmt_number(spec.high)}"
        rng += ", log scale" if spec.log else ""
    return f"- {spec.name}: {kind} {rng} (default {fmt_number(default)}); {spec.help}"


def _family_block(index: int, fam: FamilySpec) -> str:
    alias = f' (also written "{fam.aliases[0]}")' if fam.aliases else ""
    lines = [f"({index}) {fam.title}{alias}: {fam.help}.", "{", f'  "{FAMILY_KEY}": "{fam.name}",']
    for i, spec in enumerate(fam.fields):
        value = _PLACEHOLDER.get(spec.kind) or '"<' + " | ".join(spec.choices) + '>"'
        comma = "," if i < len(fam.fields) - 1 else ""
        lines.append(f'  "{spec.name}": {value}{comma}')
    lines.append("}")
    lines.extend(_field_line(spec) for spec in fam.fields)
    return "\n".join(lines)


def describe_families() -> str:
    """The four families for a policy LLM, in the paper's E.6 style (format, ranges, meaning)."""
    return "\n\n".join(_family_block(i, fam) for i, fam in enumerate(FAMILIES, start=1))


def family_table_markdown() -> str:
    """The README's family table (family, fields with ranges and aliases), from ``FAMILIES``.

    >>> print(family_table_markdown().splitlines()[3])
    | `LORA` | `lambda` 0-1 |
    """

    def cell(spec: FieldSpec) -> str:
        text = f"`{spec.name}`"
        if spec.kind in ("int", "float"):
            text += f" {fmt_number(spec.low)}-{fmt_number(spec.high)}"
        elif spec.kind == "enum":
            text += " " + ", ".join(spec.choices)
        if spec.aliases and spec.attr not in spec.aliases:
            text += " (alias " + ", ".join(f"`{a}`" for a in spec.aliases) + ")"
        return text

    lines = ["| family | fields (ranges) |", "|---|---|"]
    for fam in FAMILIES:
        alias = " (alias " + ", ".join(f"`{a}`" for a in fam.aliases) + ")" if fam.aliases else ""
        lines.append(f"| `{fam.name}`{alias} | " + ", ".join(cell(f) for f in fam.fields) + " |")
    return "\n".join(lines)


def policy_prompt(task_context: str, task_name: str | None = None) -> list[dict[str, str]]:
    """Chat messages (system + user) asking for one JSON strategy, after the paper's template."""
    target = f"the {task_name} dataset" if task_name else "this dataset"
    user = (
        f"Task Context:\n{str(task_context).strip()}\n\n"
        "Your Instruction:\n"
        "Based on the task context and method descriptions below, generate a single JSON "
        "object representing the most effective adaptation strategy. You must choose one "
        "strategy family and output strictly valid JSON with no extra text. Every number must "
        "lie in its stated range.\n\n"
        "JSON Output Format & Strategy Families:\n\n"
        f"{describe_families()}\n\n"
        f"Now, provide only the JSON object for {target}."
    )
    return [{"role": "system", "content": POLICY_SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------------------------
# Discrete catalogue (SB3 Discrete)
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _catalogue() -> tuple[Strategy, ...]:
    out = []
    for fam in FAMILIES:
        cls = STRATEGY_CLASSES[fam.name]
        for combo in itertools.product(*(f.catalogue_values for f in fam.fields)):
            out.append(cls(**{f.attribute: v for f, v in zip(fam.fields, combo)}))
    return tuple(out)


def catalogue(max_prompt_batches: int | None = None) -> list[Strategy]:
    """A deterministic grid of representative strategies, every family (product of each
    field's ``grid`` values from the table; LORA lambda 0 is the no-op).

    ``max_prompt_batches`` leaves out TTS entries with more prompt batches (an ensemble over m
    adapters costs m evaluations; the cpu preset's SB3 runs drop m=20).
    """
    items = list(_catalogue())
    if max_prompt_batches is not None:
        items = [s for s in items if getattr(s, "num_prompt_batches", 0) <= max_prompt_batches]
    return items


def paper_strategies() -> list[Strategy]:
    """The CORAL paper's example configuration of each family (App. E), in table order."""
    return [
        STRATEGY_CLASSES[fam.name](**{f.attribute: dict(fam.paper_example).get(f.name, f.default) for f in fam.fields})
        for fam in FAMILIES
        if fam.paper_example
    ]


def catalogue_index(strategy: Strategy) -> int:
    """Position of a strategy in :func:`catalogue` (ValueError if it is not there)."""
    return _catalogue().index(strategy)


# --------------------------------------------------------------------------------------------
# Factored MultiDiscrete encoding
# --------------------------------------------------------------------------------------------


class FactoredEncoding:
    """A ``MultiDiscrete`` view of the action: dim 0 picks the family, then one dim per field
    of every family (in table order) picks one of that field's ``bins``.

    ``decode`` reads only the chosen family's dims; the other families' dims are ignored, so
    every bin of every dim is always valid and :meth:`action_masks` is all ``True`` (a flat
    mask of length ``sum(nvec)`` for sb3-contrib's MaskablePPO). ``encode`` sets the dims of
    the families not chosen to their default's bin.
    """

    def __init__(self) -> None:
        dims: list[tuple[str | None, FieldSpec | None]] = [(None, None)]
        bins: list[tuple] = [FAMILY_NAMES]
        for fam in FAMILIES:
            for spec in fam.fields:
                dims.append((fam.name, spec))
                bins.append(tuple(spec.bins))
        self.dims = tuple(dims)
        self.bins = tuple(bins)
        self.nvec: tuple[int, ...] = tuple(len(b) for b in bins)
        self.dim_names: tuple[str, ...] = tuple(
            FAMILY_KEY if fam is None else f"{fam}.{spec.name}" for fam, spec in dims
        )

    def family_dims(self, family: str) -> list[int]:
        """Indices of the dims that matter when ``family`` is chosen."""
        return [i for i, (fam, _) in enumerate(self.dims) if fam == family]

    def decode(self, vector: Sequence[Any]) -> Strategy:
        """The strategy a vector of bin indices stands for."""
        try:
            values = [v for v in vector]
        except TypeError:
            raise StrategyValidationError(
                f"a factored action must be a sequence of {len(self.nvec)} integers; got {type(vector).__name__}."
            ) from None
        if len(values) != len(self.nvec):
            raise StrategyValidationError(
                f"a factored action has {len(self.nvec)} entries ({', '.join(self.dim_names)}); got {len(values)}."
            )
        idx = [self._index(i, v) for i, v in enumerate(values)]
        family = FAMILY_NAMES[idx[0]]
        kwargs = {self.dims[i][1].attribute: self.bins[i][idx[i]] for i in self.family_dims(family)}
        return STRATEGY_CLASSES[family](**kwargs)

    def _index(self, dim: int, value: Any) -> int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not ok and isinstance(value, numbers.Real) and float(value).is_integer():
            ok = True
        if not ok or not 0 <= int(value) < self.nvec[dim]:
            raise StrategyValidationError(
                f"factored action entry {dim} ({self.dim_names[dim]}) must be an integer from 0 "
                f"to {self.nvec[dim] - 1}; got {value!r}."
            )
        return int(value)

    def encode(self, strategy: Strategy, nearest: bool = False):
        """Bin indices (numpy int64 vector) of a strategy whose values are all bins (catalogue
        strategies are). ``nearest=True`` snaps other values to the closest bin (log distance
        for log-scale fields) instead of raising ``ValueError``."""
        import numpy as np

        if not isinstance(strategy, BaseStrategy):
            raise TypeError(f"encode needs a strategy dataclass; got {type(strategy).__name__}")
        out = [FAMILY_NAMES.index(strategy.family)]
        for fam, spec in self.dims[1:]:
            value = getattr(strategy, spec.attribute) if fam == strategy.family else spec.default
            out.append(_bin_index(spec, value, nearest))
        return np.asarray(out, dtype=np.int64)

    def action_masks(self):
        """Flat bool mask of length ``sum(nvec)``; all bins are valid (see the class doc)."""
        import numpy as np

        return np.ones(sum(self.nvec), dtype=bool)


def _bin_index(spec: FieldSpec, value: Any, nearest: bool) -> int:
    for i, b in enumerate(spec.bins):
        if b == value and type(b) is type(value):
            return i
    if not nearest or spec.kind in ("bool", "enum"):
        raise ValueError(
            f"{spec.name}={value!r} is not one of the bins {spec.bins}; use nearest=True to snap to the closest bin"
        )
    dist = (lambda b: abs(math.log(b) - math.log(value))) if spec.log else (lambda b: abs(b - value))
    return min(range(len(spec.bins)), key=lambda i: dist(spec.bins[i]))


# --------------------------------------------------------------------------------------------
# Random sampler
# --------------------------------------------------------------------------------------------


class _Draw:
    """Uniform draws from a numpy Generator / RandomState, a random.Random, or a seed."""

    def __init__(self, rng: Any) -> None:
        if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
            rng = random.Random(None if rng is None else int(rng))
        if not hasattr(rng, "random"):
            raise TypeError(
                "rng must be a numpy Generator or RandomState, a random.Random, an "
                f"int seed or None; got {type(rng).__name__}"
            )
        self.rng = rng

    def unit(self) -> float:
        return float(self.rng.random())

    def below(self, n: int) -> int:
        r = self.rng
        if hasattr(r, "integers"):
            return int(r.integers(n))
        if hasattr(r, "randrange"):
            return int(r.randrange(n))
        return int(r.randint(n))  # numpy RandomState


def _sample_field(spec: FieldSpec, draw: _Draw) -> Any:
    if spec.kind == "int":
        return int(spec.low) + draw.below(int(spec.high) - int(spec.low) + 1)
    if spec.kind == "bool":
        return draw.below(2) == 1
    if spec.kind == "enum":
        return spec.choices[draw.below(len(spec.choices))]
    u = draw.unit()
    if spec.log:
        lo, hi = math.log(spec.low), math.log(spec.high)
        value = math.exp(lo + u * (hi - lo))
    else:
        value = spec.low + u * (spec.high - spec.low)
    value = float(f"{value:.3g}")  # readable; the sampler's own rounding, kept in range
    return min(max(value, spec.low), spec.high)


def sample_strategy(rng: Any = None) -> Strategy:
    """A random strategy: uniform family, then each field uniform in its range (log-uniform
    for log-scale fields; floats rounded to 3 significant digits). ``rng`` is a numpy
    ``Generator``/``RandomState``, a ``random.Random`` or an int seed (deterministic)."""
    draw = _Draw(rng)
    fam = FAMILIES[draw.below(len(FAMILIES))]
    kwargs = {spec.attribute: _sample_field(spec, draw) for spec in fam.fields}
    return STRATEGY_CLASSES[fam.name](**kwargs)
