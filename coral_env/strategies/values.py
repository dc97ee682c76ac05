"""Rendering and coercion of strategy field values, and the error every invalid action raises.

:func:`coerce_value` turns one untrusted value into a field's canonical Python type (or raises a
:class:`Problem` whose text names the field, what is allowed, the value and the fix); both the
strategy dataclasses and the parser use it, so a value is checked the same way on either path.
:func:`show` renders untrusted values safely for those messages.

>>> fmt_number(1e-07), fmt_number(0.0001), fmt_number(1.0)
('1e-7', '0.0001', '1')
>>> show(float("nan")), show("x" * 70)[:10]
('NaN', '"xxxxxxxxx')

This module imports only the standard library.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import reprlib
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .schema import FieldSpec

MAX_ACTION_CHARS = 10_000
"""Longest accepted action text (and longest string anywhere in an action)."""


class StrategyValidationError(ValueError):
    """An action that is not a valid strategy. ``problems`` lists every problem found (the
    message joins them); ``field``/``value`` describe the first one."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: Any = None,
        family: str | None = None,
        problems: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value
        self.family = family
        self.problems = list(problems) if problems else [message]

    def __str__(self) -> str:
        return self.message


class Problem(Exception):
    """One problem with one field; several are joined into a StrategyValidationError."""

    def __init__(self, text: str, field: str | None, value: Any = None) -> None:
        super().__init__(text)
        self.text, self.field, self.value = text, field, value


def error_from(problems: list[Problem], family: str | None) -> StrategyValidationError:
    texts = [p.text for p in problems]
    if len(texts) == 1:
        message = texts[0]
    else:
        head = f"invalid {family} strategy" if family else "invalid strategy"
        message = f"{head}: {len(texts)} problems:\n" + "\n".join(f"- {t}" for t in texts)
    first = problems[0]
    return StrategyValidationError(message, field=first.field, value=first.value, family=family, problems=texts)


def fmt_number(x: Any) -> str:
    """Compact, readable number: 1e-07 -> '1e-7', 0.0001 -> '0.0001', 1.0 -> '1'."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:g}".replace("e-0", "e-").replace("e+0", "e+")


_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlevel = 3


def show(value: Any) -> str:
    """A short, safe rendering of an untrusted value (JSON spelling where there is one)."""
    try:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            if value.bit_length() > 64:
                return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
            return int.__repr__(value)
        if isinstance(value, float):
            if math.isnan(value):
                return "NaN"
            if math.isinf(value):
                return "Infinity" if value > 0 else "-Infinity"
            return float.__repr__(value)
        if isinstance(value, str):
            text = value if len(value) <= 60 else value[:57] + "..."
            return json.dumps(text)
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not escape
        return f"<a {type(value).__name__}>"


def quote_key(key: str) -> str:
    """A field name as written, quoted (shortened when long)."""
    return repr(key) if len(key) <= 60 else show(key)


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "a boolean"
    if isinstance(value, numbers.Integral):
        return "an integer"
    if isinstance(value, numbers.Real):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a {type(value).__name__}"


def _canonical_number(value: float) -> float:
    return float(value) + 0.0  # -0.0 -> 0.0, so equal strategies serialise equally


def coerce_value(family: str, spec: FieldSpec, value: Any) -> tuple[Any, str | None]:
    """Return (value in canonical Python type, note or None), or raise Problem."""
    where = f"field '{spec.name}' of {family}"
    allowed = f"{spec.allowed()} (default {json_value(spec.default)})"

    def fail(what: str, fix: str) -> Problem:
        return Problem(f"{where} must be {allowed}; got {show(value)} ({what}). Fix: {fix}.", spec.name, value)

    def out_of_range() -> Problem:
        return Problem(
            f"{where} is out of range: got {show(value)}; allowed: {allowed}. Fix: choose a "
            f"value from {fmt_number(spec.low)} to {fmt_number(spec.high)} (out-of-range "
            f"values are rejected, never clipped).",
            spec.name,
            value,
        )

    is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"
    if spec.kind in ("int", "float"):
        if is_bool:
            raise fail("a boolean", "use a number, not true/false")
        if isinstance(value, str):
            if len(value) > MAX_ACTION_CHARS:
                raise fail(f"a string of {len(value)} characters", "use a short number")
            try:
                float(value.strip())
                fix = f"write {value.strip()} as a JSON number, without quotes"
            except ValueError:
                fix = "use a JSON number"
            raise fail("a string", fix)
        if isinstance(value, numbers.Integral):
            iv = int(value)
            if not spec.low <= iv <= spec.high:
                raise out_of_range()
            return (iv, None) if spec.kind == "int" else (_canonical_number(iv), None)
        if isinstance(value, numbers.Real):
            try:
                fv = float(value)
            except (OverflowError, ValueError):
                raise out_of_range() from None
            if not math.isfinite(fv):
                raise fail(
                    "not a finite number", f"use a finite number from {fmt_number(spec.low)} to {fmt_number(spec.high)}"
                )
            if spec.kind == "int":
                if not fv.is_integer():
                    raise fail("not a whole number", "use a whole number")
                if not spec.low <= fv <= spec.high:
                    raise out_of_range()
                iv = int(fv)
                return iv, f"field '{spec.name}' given as {show(fv)}: read as the integer {iv}"
            if not spec.low <= fv <= spec.high:
                raise out_of_range()
            return _canonical_number(fv), None
        raise fail(kind_of(value), "use a JSON number")
    if spec.kind == "bool":
        if is_bool:
            return bool(value), None
        if isinstance(value, str) and value.strip().casefold() in ("true", "false"):
            raise fail("a string", f"write {value.strip().casefold()} without quotes")
        raise fail(kind_of(value), "write true or false")
    # enum
    if not isinstance(value, str):
        raise fail(kind_of(value), f"use one of the strings {', '.join(spec.choices)}")
    if value in spec.choices:
        return value, None
    if len(value) <= 200:
        norm = value.strip().casefold().replace("-", "_").replace(" ", "_")
        if norm in spec.choices:
            return norm, f"field '{spec.name}' value {show(value)} read as {show(norm)}"
        close = difflib.get_close_matches(norm, spec.choices, n=1)
    else:
        close = []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise fail("not one of the choices", f"use one of {', '.join(spec.choices)} exactly{hint}")


def json_value(value: Any) -> str:
    """A value as JSON writes it, unquoted (for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return fmt_number(value)
