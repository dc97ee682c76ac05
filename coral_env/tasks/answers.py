"""Final-answer extraction and comparison for generative tasks (GSM8K numbers, MATH expressions).

Kept deliberately modest: string normalisation in the spirit of lm-eval-harness' MATH and
Minerva utilities, plus numeric equality, without a computer algebra system.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

AnswerType = str  # "number" | "math" | "text" (aliases: "gsm8k", "multiple_choice", "choice")

# A number as written in prose: optional sign and $, thousands groups or plain digits, decimals.
_NUMBER = r"[-−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-−]?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_HASH_RE = re.compile(r"####\s*([-−]?\$?\s?[\d.,]*\d)")
_ANSWER_IS_RE = re.compile(rf"answer is[:\s]*\\?\$?\s*({_NUMBER})", re.IGNORECASE)


def normalize_number(text: str) -> str:
    """Canonical string of a number: no commas, $ or trailing '.', and "18.0" -> "18".

    Returns the cleaned text unchanged when it is not a number.
    """
    s = text.strip().replace("−", "-").replace(",", "").replace("$", "").replace(" ", "")
    s = s.rstrip(".")
    try:
        value = Decimal(s)
    except InvalidOperation:
        return s
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_gsm8k_answer(text: str) -> str | None:
    """The final number of a GSM8K-style solution, or ``None`` if the text holds no number.

    Priority: the number after the first "####", then after the first "The answer is", else the
    last number in the text (first, not last, match: a plain-style model that runs on writes
    further made-up questions after its answer).
    """
    for pattern in (_HASH_RE, _ANSWER_IS_RE):
        match = pattern.search(text)
        if match:
            return normalize_number(match.group(1))
    numbers = _NUMBER_RE.findall(text)
    if not numbers:
        return None
    return normalize_number(numbers[-1])


def extract_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``) with balanced braces, else ``None``.

    ``\boxed 5`` (no braces) yields the token up to the next ``$`` or whitespace.
    """
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    macro = "\\boxed" if text.startswith("\\boxed", idx) else "\\fbox"
    rest = text[idx + len(macro) :]
    if rest.startswith(" "):
        token = rest.strip().split("$")[0].split()
        return token[0] if token else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, char in enumerate(rest):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None  # unbalanced: the model stopped mid-answer


_UNIT_WORDS = (
    "degrees",
    "degree",
    "units",
    "unit",
    "dollars",
    "dollar",
    "cents",
    "cm",
    "meters",
    "inches",
    "feet",
    "hours",
    "minutes",
    "seconds",
    "mph",
    "pounds",
    "sq",
    "square",
)


def _strip_text_units(s: str) -> str:
    # "\text{ cm}" style trailing units (hendrycks remove_right_units).
    if "\\text{ " in s:
        s = s.split("\\text{ ")[0]
    # Unwrap \text{...}, \textbf{...}, \mbox{...}, \mathrm{...} keeping their content.
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r"\1", s)
    words = "|".join(_UNIT_WORDS)
    return re.sub(rf"(?<=[\d}}])\s*(?:{words})(?:\^?\{{?[23]\}}?)?\s*$", "", s)


def _fix_fracs(s: str) -> str:
    r"""``\frac12`` -> ``\frac{1}{2}``, ``\frac1{2}`` -> ``\frac{1}{2}``."""
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    return re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)


def normalize_math_answer(answer: str) -> str:
    r"""Canonical form of a MATH final answer for string comparison.

    Removes spaces, ``\left``/``\right``, ``\!``, ``\,``, ``\;``, dollar signs, degree marks,
    percent signs, trailing units and full stops, a short ``x =`` prefix, and thousands
    separators; maps ``\dfrac``/``\tfrac`` to ``\frac`` and ``a/b`` (integers) to ``\frac{a}{b}``.
    """
    s = answer.strip().replace("\n", "")
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "")
    s = re.sub(r"(?<!\\)\\ ", "", s)  # a TeX space "\ ", not a row break "\\"
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("°", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    s = _strip_text_units(s)
    s = s.strip().rstrip(".").strip()
    parts = s.split("=")
    if len(parts) == 2 and len(parts[0].strip()) <= 2:
        s = parts[1]  # "x = 5" -> "5"; longer left sides are part of the answer
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    s = re.sub(r"(^|[{(\[,])\.(\d)", r"\g<1>0.\2", s)  # ".5" -> "0.5"
    match = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if match:
        s = f"\\frac{{{match.group(1)}}}{{{match.group(2)}}}"
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+(\.\d+)?", s):
        s = normalize_number(s)
    return s


def extract_math_answer(text: str) -> str | None:
    """A MATH-style solution's final answer: boxed, else "final answer is", else the last number."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    match = re.search(r"final answer is\s*(.*?)(?:\.\s*I hope|\.?\s*$)", text, re.IGNORECASE | re.S)
    if match is None:
        match = re.search(r"answer is[:\s]*(.*?)(?:\.\s|\.?\s*$|\n)", text, re.IGNORECASE | re.S)
    if match:
        return match.group(1).strip()
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def normalize_text_answer(text: str) -> str:
    """Lower-case, strip surrounding punctuation and collapse whitespace (free-text answers)."""
    return " ".join(text.lower().strip().strip(".!?\"'").split())


def _numbers_equal(a: str, b: str) -> bool:
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return False


def answers_match(answer_type: AnswerType, predicted_text: str, gold: str) -> bool:
    """Whether a generated text's final answer equals the gold answer.

    ``answer_type``: "number" (alias "gsm8k"), "math", or "text" (aliases "multiple_choice",
    "choice": the first line of the prediction, or what follows "answer is", against the gold).
    """
    kind = answer_type.lower()
    if kind in ("number", "gsm8k"):
        predicted = extract_gsm8k_answer(predicted_text)
        if predicted is None:
            return False
        gold_n = normalize_number(gold)
        return predicted == gold_n or _numbers_equal(predicted, gold_n)
    if kind == "math":
        predicted = extract_math_answer(predicted_text)
        if predicted is None:
            return False
        p, g = normalize_math_answer(predicted), normalize_math_answer(gold)
        return p == g or _numbers_equal(p, g)
    if kind in ("text", "multiple_choice", "choice"):
        target = normalize_text_answer(gold)
        lines = predicted_text.strip().splitlines()
        candidates = [predicted_text, lines[0] if lines else ""]
        match = re.search(r"answer is[:\s]*(.+)", predicted_text, re.IGNORECASE)
        if match:
            candidates.append(match.group(1).splitlines()[0])
        return any(normalize_text_answer(c) == target for c in candidates)
    raise ValueError(f"unknown answer_type {answer_type!r}; use 'number' (or 'gsm8k'), 'math' or 'text'")
