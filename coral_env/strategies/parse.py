"""Reading an untrusted action (JSON text, bytes, dict or strategy) into a validated strategy.

:func:`parse_strategy` raises nothing but :class:`StrategyValidationError`, whose message names
the field, what is allowed, the value given and how to fix it; every problem in an action is
reported at once. Leniencies (aliases, integral floats for integer fields, missing fields) are
accepted but reported in :attr:`ParsedStrategy.notes`.

>>> parsed = parse_strategy('{"family": "lora", "lambda": 0.25}')
>>> parsed.strategy.canonical_json(), parsed.notes
('{"family":"LORA","lambda":0.25}', ['family "lora" read as "LORA"'])
>>> parse_strategy({"family": "TTL", "ttl_steps": 99})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
coral_env.strategies.values.StrategyValidationError: field 'ttl_steps' of TTL is out of range: ...

This module imports only the standard library.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .extract import extract_json
from .schema import (
    _FAMILY_BY_NAME,
    _FAMILY_LOOKUP,
    FAMILIES,
    FAMILY_KEY,
    FAMILY_KEY_ALIASES,
    FAMILY_NAMES,
    STRATEGY_CLASSES,
    BaseStrategy,
    FamilySpec,
    Strategy,
    families_text,
    unknown_family_text,
)
from .values import (
    MAX_ACTION_CHARS,
    Problem,
    StrategyValidationError,
    coerce_value,
    error_from,
    json_value,
    kind_of,
    quote_key,
    show,
)


@dataclass(frozen=True)
class ParsedStrategy:
    """A validated strategy plus notes on every leniency applied while reading it."""

    strategy: Strategy
    notes: list[str] = field(default_factory=list)

    @property
    def family(self) -> str:
        return self.strategy.family

    def canonical_json(self) -> str:
        return self.strategy.canonical_json()


class _DuplicateKey(Exception):
    pass


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _loads(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as e:
        lo, hi = max(0, e.pos - 25), min(len(text), e.pos + 25)
        near = text[lo : e.pos] + "<HERE>" + text[e.pos : hi]
        found = extract_json(text)
        hint = ""
        if found is not None and found != text.strip() and _parses(found):
            hint = (
                f" The text contains a JSON object at character {text.find(found)}; send "
                "only that object (extract_json() finds it)."
            )
        raise StrategyValidationError(
            f"action is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno} "
            f"(char {e.pos}), near {json.dumps(near)}.{hint} Fix: send one JSON object with "
            "double-quoted keys and no comments or trailing commas, e.g. "
            '{"family": "LORA", "lambda": 0.5}.',
            field=None,
            value=None,
        ) from None
    except _DuplicateKey as e:
        raise StrategyValidationError(
            f"field {show(e.args[0])} appears more than once in the JSON object. Fix: give each field once.",
            field=str(e.args[0]),
        ) from None
    except RecursionError:
        raise StrategyValidationError("action JSON is nested too deeply. Fix: send one flat JSON object.") from None
    except ValueError as e:  # e.g. an integer literal beyond Python's digit limit
        raise StrategyValidationError(
            f"action is not usable JSON: {str(e)[:200]}. Fix: send one flat JSON object with small numbers."
        ) from None


def _too_long(what: str, n: int) -> StrategyValidationError:
    return StrategyValidationError(
        f"{what} is {n} characters long; the limit is {MAX_ACTION_CHARS}. Fix: send only the "
        'short JSON strategy object, e.g. {"family": "TTS", "num_prompt_batches": 4, '
        '"method": "max_confidence"}.'
    )


def _match_key(key: str, names: dict[str, str]) -> str | None:
    """Canonical name for ``key`` given {spelling: canonical} (exact, then case-insensitive)."""
    if key in names:
        return names[key]
    folded = {k.casefold(): v for k, v in names.items()}
    return folded.get(key.strip().casefold())


def _parse_mapping(action: Mapping[Any, Any]) -> ParsedStrategy:
    notes: list[str] = []
    if len(action) > 1000:
        raise StrategyValidationError(
            f"action has {len(action)} fields; a strategy has at most "
            f"{1 + max(len(f.fields) for f in FAMILIES)}. Fix: send only the strategy's fields."
        )
    family_keys = {FAMILY_KEY: FAMILY_KEY, **{a: FAMILY_KEY for a in FAMILY_KEY_ALIASES}}
    family_given: list[tuple[str, Any]] = []
    rest: list[tuple[str, Any]] = []
    for key, value in action.items():
        if not isinstance(key, str):
            raise StrategyValidationError(
                f"field names must be strings; got {show(key)} ({kind_of(key)}). Fix: use the "
                "field names of the schema.",
                field=None,
                value=key,
            )
        if len(key) > MAX_ACTION_CHARS or (isinstance(value, str) and len(value) > MAX_ACTION_CHARS):
            raise _too_long(
                f"a string in field {show(key)}", max(len(key), len(value) if isinstance(value, str) else 0)
            )
        if _match_key(key, family_keys) is not None:
            family_given.append((key, value))
        else:
            rest.append((key, value))

    if len(family_given) > 1:
        keys = ", ".join(show(k) for k, _ in family_given)
        raise StrategyValidationError(
            f'the family is given more than once (as {keys}). Fix: give only "{FAMILY_KEY}".', field=FAMILY_KEY
        )
    if not family_given or family_given[0][1] is None:
        owners = sorted({fam.name for k, _ in rest for fam in FAMILIES if _match_key(k, _field_names(fam)) is not None})
        hint = f" The fields given belong to {' or '.join(owners)}." if owners else ""
        raise StrategyValidationError(
            f'action has no "{FAMILY_KEY}" field.{hint} Allowed families: {families_text()}. '
            f'Fix: add "{FAMILY_KEY}": one of {", ".join(FAMILY_NAMES)}.',
            field=FAMILY_KEY,
        )
    fkey, fvalue = family_given[0]
    if fkey != FAMILY_KEY:
        notes.append(f"key {quote_key(fkey)} read as {FAMILY_KEY!r}")
    if not isinstance(fvalue, str):
        hint = (
            " (it holds an object: put the strategy's fields at the top level)" if isinstance(fvalue, Mapping) else ""
        )
        raise StrategyValidationError(
            f'field "{FAMILY_KEY}" must be a string naming a family{hint}; got {show(fvalue)} '
            f"({kind_of(fvalue)}). Allowed families: {families_text()}. Fix: e.g. "
            f'"{FAMILY_KEY}": "{FAMILY_NAMES[0]}".',
            field=FAMILY_KEY,
            value=fvalue,
        )
    canonical_family = _FAMILY_LOOKUP.get(fvalue.strip().casefold())
    if canonical_family is None:
        raise StrategyValidationError(unknown_family_text(fvalue), field=FAMILY_KEY, value=fvalue)
    if fvalue != canonical_family:
        notes.append(f"family {show(fvalue)} read as {show(canonical_family)}")
    spec = _FAMILY_BY_NAME[canonical_family]
    names = _field_names(spec)

    problems: list[Problem] = []
    seen: dict[str, str] = {}
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in rest:
        name = _match_key(key, names)
        if name is None:
            unknown.append(key)
            continue
        if name in seen:
            problems.append(
                Problem(
                    f"field '{name}' of {spec.name} is given twice (as {show(seen[name])} and "
                    f"{show(key)}). Fix: give it once, as '{name}'.",
                    name,
                    value,
                )
            )
            continue
        seen[name] = key
        if key != name:
            why = "alias" if key in names else "field"
            notes.append(f"{why} {quote_key(key)} read as {name!r}")
        if value is None:
            continue  # null: treated as missing (default, noted below)
        try:
            coerced, note = coerce_value(spec.name, spec.field(name), value)
        except Problem as p:
            problems.append(p)
            continue
        if note:
            notes.append(note)
        values[name] = coerced
    if unknown:
        problems.insert(0, _unknown_fields_problem(spec, unknown))
    if problems:
        raise error_from(problems, spec.name)

    kwargs = {}
    for f in spec.fields:
        if f.name in values:
            kwargs[f.attribute] = values[f.name]
        else:
            how = "is null" if f.name in seen else "missing"
            notes.append(f"field '{f.name}' {how}: default {json_value(f.default)} used")
    return ParsedStrategy(STRATEGY_CLASSES[spec.name](**kwargs), notes)


def _field_names(spec: FamilySpec) -> dict[str, str]:
    return {n: f.name for f in spec.fields for n in (f.name, *f.aliases)}


def _unknown_fields_problem(spec: FamilySpec, unknown: list[str]) -> Problem:
    shown = [show(k) for k in unknown[:5]] + ([f"and {len(unknown) - 5} more"] if len(unknown) > 5 else [])
    hints = []
    for key in unknown[:5]:
        others = [f.name for f in FAMILIES if f is not spec and _match_key(key, _field_names(f)) is not None]
        if others:
            hints.append(f"{key!r} belongs to {' / '.join(others)}")
        elif len(key) <= 100:
            close = difflib.get_close_matches(key, list(_field_names(spec)), n=1)
            if close:
                hints.append(f"did you mean {close[0]!r} instead of {key!r}?")
    allowed = ", ".join(f.name + (f" (alias {', '.join(f.aliases)})" if f.aliases else "") for f in spec.fields)
    hint = f" ({'; '.join(hints)})" if hints else ""
    plural = "s" if len(unknown) > 1 else ""
    return Problem(
        f"unknown field{plural} {', '.join(shown)} for family {spec.name}{hint}. Allowed fields "
        f"of {spec.name}: {allowed}. Fix: remove the field{plural} or fix the spelling.",
        str(unknown[0])[:100],
        unknown[0],
    )


def parse_strategy(action: Any) -> ParsedStrategy:
    """Validate an action (JSON text, bytes, dict, strategy) into a :class:`ParsedStrategy`.

    Raises only :class:`StrategyValidationError` (a ``ValueError``), for any input whatever.
    """
    try:
        return _parse(action)
    except StrategyValidationError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a bug must still surface as a validation error
        raise StrategyValidationError(
            f"internal error while validating the action ({type(e).__name__}: "
            f"{show(str(e))}); please report it. Fix: send a plain JSON object such as "
            '{"family": "LORA", "lambda": 0.5}.'
        ) from e


def _parse(action: Any) -> ParsedStrategy:
    if isinstance(action, ParsedStrategy):
        return action
    if isinstance(action, BaseStrategy):
        return ParsedStrategy(action, [])
    if isinstance(action, (bytes, bytearray, memoryview)):
        raw = bytes(action)
        if len(raw) > MAX_ACTION_CHARS * 4:
            raise _too_long("action", len(raw))
        try:
            action = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StrategyValidationError(
                f"action bytes are not UTF-8 (bad byte at position {e.start}). Fix: send UTF-8 JSON text."
            ) from None
    if isinstance(action, str):
        if len(action) > MAX_ACTION_CHARS:
            raise _too_long("action text", len(action))
        if not action.strip():
            raise StrategyValidationError(
                'action is empty. Fix: send one JSON object, e.g. {"family": "LORA", "lambda": 0.5}.'
            )
        action = _loads(action)
        if isinstance(action, str):
            raise StrategyValidationError(
                f"action is a JSON string ({show(action)}), not an object. Fix: send the "
                "object itself, not JSON-encoded twice.",
                value=action,
            )
    if not isinstance(action, Mapping):
        raise StrategyValidationError(
            f'action must be a JSON object with a "{FAMILY_KEY}" field; got {show(action)} '
            f'({kind_of(action)}). Fix: send e.g. {{"family": "LORA", "lambda": 0.5}}.',
            value=action,
        )
    return _parse_mapping(action)


def action_from_reply(reply: Any) -> tuple[Any, bool]:
    """(action, valid) for a policy's free-text reply, or for an action given directly.

    Text: the first JSON object in it (:func:`extract_json`) as canonical JSON, or, when it
    holds no valid strategy, the object found (or the whole reply) unchanged, so the env
    reports the exact problem. Anything else (dict, strategy) is canonicalised when valid and
    passed through unchanged when not.

    >>> action_from_reply('Sure: {"family": "TTT", "ttl_steps": 5} done')[1]
    True
    >>> action_from_reply('{"family": "LORA", "lambda": 7}')
    ('{"family": "LORA", "lambda": 7}', False)
    """
    found = extract_json(reply) if isinstance(reply, (str, bytes, bytearray)) else reply
    if found is None:
        return reply, False
    try:
        return parse_strategy(found).strategy.to_json(), True
    except StrategyValidationError:
        return found, False
