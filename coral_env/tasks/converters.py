"""Row -> Example converters, one per dataset schema, reproducing lm-eval-harness' plain prompts.

Every converter takes a raw row (a mapping in the Hugging Face schema) and a fallback uid (used
when the row has no id field) and raises ``RowError`` naming the missing or bad field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from coral_env.tasks.answers import extract_boxed, normalize_math_answer, normalize_number
from coral_env.tasks.base import Example
from coral_env.tasks.errors import RowError

Row = Mapping[str, Any]
Converter = Callable[[Row, str], Example]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def field(row: Row, name: str) -> Any:
    """``row[name]``, or a ``RowError`` that names the missing field and the fields present."""
    try:
        return row[name]
    except (KeyError, TypeError):
        present = ", ".join(sorted(map(str, row))) if isinstance(row, Mapping) else type(row)
        raise RowError(f"missing field {name!r} (row has: {present})") from None


def text_field(row: Row, name: str) -> str:
    """A field that must be a string."""
    value = field(row, name)
    if not isinstance(value, str):
        raise RowError(f"field {name!r} must be a string, got {type(value).__name__}")
    return value


def _uid(row: Row, fallback: str) -> str:
    for key in ("id", "uid", "idx", "ind", "task_id"):
        if key in row and row[key] is not None and str(row[key]) != "":
            return str(row[key])
    return fallback


def multiple_choice(uid: str, question: str, context: str, choices: Sequence[str], label: int) -> Example:
    """An Example whose choices all share one plain context (continuation = " " + choice)."""
    if not choices:
        raise RowError("no answer choices")
    if not 0 <= label < len(choices):
        raise RowError(f"label {label} out of range for {len(choices)} choices")
    choices = tuple(str(c) for c in choices)
    return Example(
        uid=uid,
        question=question,
        contexts=(context,) * len(choices),
        continuations=tuple(f" {c}" for c in choices),
        choices=choices,
        label=label,
        answer=choices[label],
    )


def generative(uid: str, question: str, context: str, answer: str) -> Example:
    """A generative Example: one context to decode from and a normalised gold answer."""
    return Example(uid=uid, question=question, contexts=(context,), answer=answer)


def parse_label(value: Any, n_choices: int, choices: Sequence[str] = (), base: int = 0) -> int:
    """Index of the gold choice from an int, a digit string (minus ``base``), a letter, or the
    exact text of a choice."""
    if isinstance(value, bool):
        raise RowError(f"label must be an index, a letter or a choice text, got {value!r}")
    if isinstance(value, int):
        index = value - base
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        index = int(value.strip()) - base
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        index = LETTERS.index(value.strip().upper())
    elif isinstance(value, str) and value in choices:
        index = list(choices).index(value)
    else:
        raise RowError(f"label {value!r} is not an index, a letter or one of the choices")
    if not 0 <= index < n_choices:
        raise RowError(f"label {value!r} out of range for {n_choices} choices")
    return index


# ---- in-domain commonsense tasks ----------------------------------------------------------


def convert_arc(row: Row, uid: str) -> Example:
    """allenai/ai2_arc: "Question: {question}\\nAnswer:" / " {choice}"; label: answerKey's index."""
    question = text_field(row, "question")
    choices = field(row, "choices")
    try:
        texts, labels = list(choices["text"]), list(choices["label"])
    except (KeyError, TypeError):
        raise RowError("field 'choices' must be {'text': [...], 'label': [...]}") from None
    key = str(field(row, "answerKey"))
    if key not in labels:
        raise RowError(f"answerKey {key!r} is not one of the labels {labels}")
    return multiple_choice(_uid(row, uid), question, f"Question: {question}\nAnswer:", texts, labels.index(key))


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag text cleaning (WikiHow bracket artefacts, double spaces)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


_TRAILING_FRAGMENT = re.compile(r"^(.*[.!?])\s+([^.!?]+)$", re.S)


def _capitalize_trailing_fragment(ctx: str) -> str:
    # Rows without ctx_a/ctx_b: ctx = ctx_a + " " + ctx_b, ctx_b the unfinished last sentence.
    if ctx.rstrip().endswith((".", "!", "?", '"')):
        return ctx  # ctx_b was empty
    match = _TRAILING_FRAGMENT.match(ctx)
    if match is None:
        return ctx
    return f"{match.group(1)} {match.group(2).capitalize()}"


def convert_hellaswag(row: Row, uid: str) -> Example:
    """Rowan/hellaswag, lm-eval format: "{activity_label}: {ctx_a} {ctx_b.capitalize()}" cleaned.

    Rows with only ``ctx`` (our offline mirror) get ctx_b recovered as the trailing unfinished
    sentence; exact for ActivityNet rows, WikiHow rows have an empty ctx_b.
    """
    label_text = text_field(row, "activity_label")
    if "ctx_a" in row and "ctx_b" in row:
        ctx = f"{text_field(row, 'ctx_a')} {text_field(row, 'ctx_b').capitalize()}"
    else:
        ctx = _capitalize_trailing_fragment(text_field(row, "ctx"))
    query = hellaswag_preprocess(f"{label_text}: {ctx}")
    endings = [hellaswag_preprocess(str(e)) for e in field(row, "endings")]
    label = parse_label(field(row, "label"), len(endings))
    return multiple_choice(_uid(row, uid), query, query, endings, label)


def convert_boolq(row: Row, uid: str) -> Example:
    """google/boolq: "{passage}\\nQuestion: {question}?\\nAnswer:" / " no", " yes"."""
    passage, question = text_field(row, "passage"), text_field(row, "question")
    answer = field(row, "answer")
    if isinstance(answer, str) and answer.lower() in ("true", "false"):
        answer = answer.lower() == "true"
    if not isinstance(answer, bool):
        raise RowError(f"field 'answer' must be true or false, got {answer!r}")
    context = f"{passage}\nQuestion: {question}?\nAnswer:"
    return multiple_choice(_uid(row, uid), f"{passage}\n{question}?", context, ["no", "yes"], int(answer))


def convert_piqa(row: Row, uid: str) -> Example:
    """ybisk/piqa: "Question: {goal}\\nAnswer:" / " {sol1}", " {sol2}"."""
    goal = text_field(row, "goal")
    choices = [text_field(row, "sol1"), text_field(row, "sol2")]
    label = parse_label(field(row, "label"), 2)
    return multiple_choice(_uid(row, uid), goal, f"Question: {goal}\nAnswer:", choices, label)


def convert_winogrande(row: Row, uid: str) -> Example:
    """allenai/winogrande, lm-eval partial scoring: one context per option (the sentence up to
    "_" with the option filled in), one shared continuation (" " + the rest, stripped)."""
    sentence = text_field(row, "sentence")
    if "_" not in sentence:
        raise RowError("field 'sentence' has no '_' blank")
    options = [text_field(row, "option1"), text_field(row, "option2")]
    answer = str(field(row, "answer")).strip()
    if answer not in ("1", "2"):
        raise RowError(f"field 'answer' must be '1' or '2', got {answer!r}")
    cut = sentence.index("_")
    target = " " + sentence[cut + 1 :].strip()
    label = int(answer) - 1
    return Example(
        uid=_uid(row, uid),
        question=sentence,
        contexts=tuple(sentence[:cut] + option for option in options),
        continuations=(target, target),
        choices=tuple(options),
        label=label,
        answer=options[label],
    )


# ---- out-of-domain tasks ------------------------------------------------------------------


def convert_social_i_qa(row: Row, uid: str) -> Example:
    """allenai/social_i_qa, lm-eval: "Q: {context} {question}\\nA:" / " {answerA|B|C}"."""
    context, question = text_field(row, "context"), text_field(row, "question")
    choices = [text_field(row, f"answer{letter}") for letter in "ABC"]
    label = parse_label(field(row, "label"), 3, base=1)
    prompt = f"Q: {context} {question}\nA:"
    return multiple_choice(_uid(row, uid), f"{context} {question}", prompt, choices, label)


def gsm8k_gold(solution: str) -> str:
    """The number after "####" in a GSM8K reference solution, commas removed."""
    if "####" not in solution:
        raise RowError("field 'answer' has no '#### <number>' final answer")
    return normalize_number(solution.split("####")[-1])


def convert_gsm8k(row: Row, uid: str) -> Example:
    """openai/gsm8k: "Question: {question}\\nAnswer:"; gold = the number after "####"."""
    question = text_field(row, "question")
    gold = gsm8k_gold(text_field(row, "answer"))
    return generative(_uid(row, uid), question, f"Question: {question}\nAnswer:", gold)


def convert_math(row: Row, uid: str) -> Example:
    """HuggingFaceH4/MATH-500 (or hendrycks MATH): "Problem: {problem}\\nAnswer:"; gold = the
    normalised ``answer`` field, else the last boxed expression of ``solution``."""
    problem = text_field(row, "problem")
    if "answer" in row and isinstance(row["answer"], str) and row["answer"].strip():
        raw = row["answer"]
    else:
        raw = extract_boxed(text_field(row, "solution"))
        if raw is None:
            raise RowError("no 'answer' field and no \\boxed{...} in 'solution'")
    return generative(_uid(row, uid), problem, f"Problem: {problem}\nAnswer:", normalize_math_answer(raw))


# Field names tried, in order, by the generic lettered multiple-choice converter.
_QUESTION_KEYS = ("question", "query", "problem", "prompt")
_CONTEXT_KEYS = ("context", "case", "passage", "premise", "premises", "vignette")
_CHOICE_LIST_KEYS = ("choices", "options", "answers")
_CHOICE_FIELD_SETS = (tuple("ABCDEFGH"), ("opa", "opb", "opc", "opd", "ope"), tuple(f"option{i}" for i in range(1, 9)))
_LABEL_KEYS = ("answer_idx", "answerKey", "answer", "label", "correct", "gold")


def _lettered_choices(row: Row) -> list[str]:
    for key in _CHOICE_LIST_KEYS:
        if key in row and row[key] is not None:
            value = row[key]
            if isinstance(value, Mapping) and "text" in value:
                return [str(v) for v in value["text"]]
            if isinstance(value, Mapping):  # {"A": "...", "B": "..."}
                return [str(value[k]) for k in sorted(value)]
            if isinstance(value, Sequence) and not isinstance(value, str):
                return [re.sub(r"^\(?[A-Z][.)]\s+", "", str(v)) for v in value]
    for names in _CHOICE_FIELD_SETS:
        present = [str(row[n]) for n in names if n in row and row[n] not in (None, "")]
        if len(present) >= 2:
            return present
    raise RowError(
        "no answer options: expected a list field 'choices'/'options' or fields A, B, C, ... or opa, opb, opc, opd"
    )


def convert_lettered_mc(row: Row, uid: str) -> Example:
    """Generic lettered multiple choice (CodeMMLU, DivLogicEval, JAMA Clinical Challenge).

    Expected fields (first present wins): question text in question/query/problem/prompt;
    optional context/case/passage/premise/vignette shown before it; options as a list in
    choices/options/answers (or {"label": [...], "text": [...]}), or separate fields A, B, C...
    or opa, opb, opc, opd; the gold in answer_idx/answerKey/answer/label/correct/gold as a
    letter, a 0-based index, or the exact option text. Plain prompt: the question with
    lettered options, "Answer:", and each option's text as the continuation.
    """
    question = next((str(row[k]) for k in _QUESTION_KEYS if k in row and row[k]), None)
    if question is None:
        raise RowError(f"missing question field (one of {', '.join(_QUESTION_KEYS)})")
    context = next((str(row[k]) for k in _CONTEXT_KEYS if k in row and row[k]), "")
    if context:
        question = f"{context}\n{question}"
    choices = _lettered_choices(row)
    key = next((k for k in _LABEL_KEYS if k in row and row[k] not in (None, "")), None)
    if key is None:
        raise RowError(f"missing answer field (one of {', '.join(_LABEL_KEYS)})")
    label = parse_label(row[key], len(choices), choices)
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    prompt = f"Question: {question}\n{options}\nAnswer:"
    return multiple_choice(_uid(row, uid), question, prompt, choices, label)


# ---- simple schemas (synthetic and user tasks) -----------------------------------------------


def convert_simple_mc(row: Row, uid: str) -> Example:
    """{"question", "choices": [...], "label": int}: "Question: {question}\\nAnswer:"."""
    question = text_field(row, "question")
    choices = field(row, "choices")
    if not isinstance(choices, Sequence) or isinstance(choices, str):
        raise RowError("field 'choices' must be a list of strings")
    label = parse_label(field(row, "label"), len(choices), choices)
    return multiple_choice(_uid(row, uid), question, f"Question: {question}\nAnswer:", choices, label)


def convert_simple_number(row: Row, uid: str) -> Example:
    """{"question", "answer": number}: generative, "Question: {question}\\nAnswer:"."""
    question = text_field(row, "question")
    gold = normalize_number(str(field(row, "answer")))
    return generative(_uid(row, uid), question, f"Question: {question}\nAnswer:", gold)
