"""Dotted field paths into a row (``choices.text``, ``choices.label.0``) and prompt templates
over them (``"{passage}\\nQuestion: {question}?"``).

A row is data: a path walks mapping keys and list indices only (no attribute access, nothing
evaluated), so a Hub-schema JSONL file with nested fields is read as it is.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from coral_env.tasks.errors import RowError

_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")


def valid_path(path: str) -> bool:
    """Whether ``path`` is a dotted field path (``a``, ``a.b``, ``a.0``)."""
    return isinstance(path, str) and bool(_PATH_RE.match(path))


def lookup(row: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path``: mapping keys, or integer indices into lists.

    A row key that itself contains dots (``"a.b": 1``) wins over the nested walk. A missing
    step raises ``RowError`` naming the path, the step and what is there.
    """
    if isinstance(row, Mapping) and path in row:
        return row[path]
    value: Any = row
    walked: list[str] = []
    for part in path.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                where = ".".join(walked) or "the row"
                present = ", ".join(sorted(map(str, value)))
                raise RowError(f"missing field {path!r}: {where} has no {part!r} (it has: {present})")
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(value) <= index < len(value):
                raise RowError(f"field {path!r}: index {index} out of range for a list of {len(value)}")
            value = value[index]
        else:
            where = ".".join(walked)
            raise RowError(f"field {path!r}: {where} is a {type(value).__name__}, cannot take {part!r}")
        walked.append(part)
    return value


def template_fields(template: str) -> list[str]:
    """The field paths a ``str.format``-style template names; ``ValueError`` explains a bad one."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"template is not a valid format string ({exc}); write fields as "
            "{field} or {a.b} and literal braces as {{ }}"
        ) from None
    names = [name for _, name, _, _ in parsed if name is not None]
    for name in names:
        if not valid_path(name) or "__" in name:
            raise ValueError(
                f"template field {{{name}}} is not allowed; use row field names or "
                "dotted paths like {question} or {choices.text.0} (no positional, "
                "attribute or index access)"
            )
    return names


def render(template: str, row: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """Fill ``template`` from ``extra`` (checked first) and dotted paths into ``row``.

    Lists render as their items joined by newlines, so ``{choices.text}`` lists the options.
    """
    out = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        value = extra[name] if extra and name in extra else lookup(row, name)
        if isinstance(value, list):
            value = "\n".join(map(str, value))
        if conversion == "r":
            value = repr(value)
        elif conversion in ("s", "a"):
            value = str(value) if conversion == "s" else ascii(value)
        out.append(format(value, spec or ""))
    return "".join(out)
