"""Finding the JSON strategy object inside free LLM text (fences, prose, braces in strings).

>>> extract_json('Sure! ```json {"family": "LORA", "lambda": 0.5} ``` Done.')
'{"family": "LORA", "lambda": 0.5}'
>>> extract_json("no object here") is None
True

This module imports only the standard library.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_EXTRACT_CHARS = 100_000
MAX_EXTRACT_STARTS = 1_000


_SPECIAL = re.compile(r'[{}"\\]')


def _balanced_span(text: str, start: int) -> str | None:
    """The brace-balanced span starting at ``text[start] == '{'`` (strings respected)."""
    depth, in_str, skip_to = 0, False, -1
    for m in _SPECIAL.finditer(text, start):
        i, c = m.start(), m.group()
        if i < skip_to:
            continue
        if in_str:
            if c == "\\":
                skip_to = i + 2  # the escaped character
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def extract_json(text: Any) -> str | None:
    """The first top-level JSON object in free LLM text, as a substring, or None.

    Handles ```json fences, leading/trailing prose and braces inside strings. If no brace span
    parses as a JSON object, the first balanced span containing a colon is returned anyway, so
    that :func:`parse_strategy` can report the exact JSON error (e.g. a trailing comma).
    Only the first ``MAX_EXTRACT_CHARS`` characters and ``MAX_EXTRACT_STARTS`` opening braces
    are tried, which bounds the time spent on hostile text.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return None
    text = text[:MAX_EXTRACT_CHARS]
    decoder = json.JSONDecoder()
    fallback: str | None = None
    look_for_fallback = True
    start = text.find("{")
    for _ in range(MAX_EXTRACT_STARTS):
        if start == -1:
            break
        try:
            obj, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            if look_for_fallback:
                span = _balanced_span(text, start)
                if span is None:
                    look_for_fallback = False  # unbalanced to the end: later starts are too
                elif ":" in span:
                    fallback, look_for_fallback = span, False
        else:
            if isinstance(obj, dict):
                return text[start:end]
        start = text.find("{", start + 1)
    return fallback
