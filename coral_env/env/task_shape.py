"""The shape of a task, measured on its support examples: what a context states in words.

Every fact here comes from the examples themselves (question texts, choice texts, the scoring
prompts the task builds, and the answers of labeled examples), never from the task's name, so
a user task read from a JSONL file gets the same treatment as a built-in one. A fact is stated
when it holds for most examples (``MAJORITY``); one odd example does not change the wording.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..tasks import Example

MAJORITY = 0.5
"""A property is stated when it holds for more than this share of the examples."""
PASSAGE_WORDS = 40
"""Words before a question's final line or sentence that make it a passage."""

_NUMBER = re.compile(r"-?[\d,]*\.?\d+")
_DIGIT = re.compile(r"\d")
_MATH = re.compile(r"\$|\\[a-zA-Z]+|\^|\\\[")
_ANSWER_CUE = re.compile(r"\b[A-Za-z]{1,12}:\s*$")  # "Answer:", "A:" at the end of the scoring prompt
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_YES_NO = {"yes", "no", "true", "false"}


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def _mostly(flags: Sequence[bool]) -> bool:
    return _share(flags) > MAJORITY


def split_passage(question: str) -> tuple[str, str]:
    """(text before the final question, the final question): the last line when the text has
    several lines, else the last sentence."""
    text = question.strip()
    lines = [line for line in text.split("\n") if line.strip()]
    last = lines[-1].strip() if len(lines) > 1 else _SENTENCE_END.split(text)[-1].strip()
    return text[: text.rfind(last)].strip(), last


def has_passage(question: str) -> bool:
    """A text of at least ``PASSAGE_WORDS`` words before a final question (see split_passage)."""
    passage, last = split_passage(question)
    return last.endswith("?") and len(passage.split()) >= PASSAGE_WORDS


def continues_text(ex: Example) -> bool:
    """The choices are scored as continuations of the text itself: no answer cue ("Answer:")
    ends the scoring prompt and the question is not a question."""
    return (
        ex.is_multiple_choice
        and not _ANSWER_CUE.search(ex.contexts[0])
        and not ex.question.rstrip().endswith("?")
        and len(set(ex.contexts)) == 1
    )


def substitutes_choice(ex: Example) -> bool:
    """Each choice is put into the sentence (the scoring prompts differ per choice)."""
    return ex.is_multiple_choice and len(set(ex.contexts)) > 1


def choices_in_question(ex: Example) -> bool:
    """Every choice appears verbatim in the question (names or numbers taken from it)."""
    text = ex.question.lower()
    return ex.is_multiple_choice and all(c.strip().lower() in text for c in ex.choices if c.strip())


def question_pattern(questions: Sequence[str]) -> str | None:
    """The wording most questions share once their numbers are masked as N ("What is N + N?"),
    else the longest opening of at least three words that most questions share ("How many
    words are in this list: ..."), else None."""
    masked = [_NUMBER.sub("N", q.strip()) for q in questions]
    if not masked:
        return None
    top = max(set(masked), key=masked.count)
    if masked.count(top) / len(masked) > MAJORITY:
        return top
    words = [m.split() for m in masked]
    opening = None
    for n in range(3, max(len(w) for w in words) + 1):
        heads = [" ".join(w[:n]) for w in words if len(w) > n]
        head = max(set(heads), key=heads.count) if heads else None
        if head is None or heads.count(head) / len(masked) <= MAJORITY:
            break
        opening = head
    return f"{opening} ..." if opening else None


def answer_kind(examples: Sequence[Example], labeled: Sequence[Example]) -> str:
    """What the answers look like, in words: from the choice texts (multiple choice: "numbers",
    "yes / no", "single words", "short phrases", "full sentences") or from the answers of the
    labeled examples (free-form: "a number", "a mathematical expression or text"; "free text"
    when no answer is shown)."""
    choices = [c.strip() for ex in examples for c in ex.choices]
    if not choices:
        answers = [ex.answer.strip() for ex in labeled if ex.answer.strip()]
        if not answers:
            return "free text"
        numeric = all(_NUMBER.fullmatch(a) for a in answers)
        return "a number" if numeric else "a mathematical expression or text"
    if all(_NUMBER.fullmatch(c) for c in choices):
        return "numbers"
    if {c.lower() for c in choices} <= _YES_NO:
        return "yes / no"
    words = sum(len(c.split()) for c in choices) / len(choices)
    if words <= 1.5:
        return "single words"
    return "short phrases" if words <= 5 else "full sentences"


def length_class(words: float) -> str:
    """Mean question length in words, named (a sentence encoder barely tells 23 from 24)."""
    if words < 10:
        return "very short questions"
    if words < 30:
        return "short questions"
    if words < 80:
        return "medium-length questions"
    return "long passages with a question"


@dataclass(frozen=True)
class TaskShape:
    """What most support examples of a task look like (see the module docstring)."""

    multiple_choice: bool
    n_choices: str  # "4", or a range "2-5"
    question_words: float
    answers: str  # answer_kind's words
    passage: bool
    blank: bool
    continuation: bool
    substitution: bool
    choices_from_question: bool
    numbers: bool
    math_notation: bool
    pattern: str | None

    @classmethod
    def measure(cls, examples: Sequence[Example], labeled: Sequence[Example] = ()) -> TaskShape:
        """Measured on ``examples`` (non-empty); answers of free-form tasks come from ``labeled``."""
        if not examples:
            raise ValueError("a task shape needs at least one example; the support split is empty")
        questions = [ex.question for ex in examples]
        passage = _mostly([has_passage(q) for q in questions])
        asked = [split_passage(q)[1] for q in questions] if passage else questions  # not the passage
        mc = examples[0].is_multiple_choice
        counts = sorted({len(ex.choices) for ex in examples}) if mc else [0]
        return cls(
            multiple_choice=mc,
            n_choices=str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}",
            question_words=sum(len(q.split()) for q in questions) / len(questions),
            answers=answer_kind(examples, labeled),
            passage=passage,
            blank=_mostly(["_" in q for q in questions]),
            continuation=_mostly([continues_text(ex) for ex in examples]),
            substitution=_mostly([substitutes_choice(ex) for ex in examples]),
            choices_from_question=mc and _mostly([choices_in_question(ex) for ex in examples]),
            numbers=_mostly([bool(_DIGIT.search(q)) for q in asked]),
            math_notation=_mostly([bool(_MATH.search(q)) for q in asked]),
            pattern=question_pattern(questions),
        )

    def statement(self) -> str:
        """One sentence saying what the task asks, built from the shape."""
        n = self.n_choices
        if not self.multiple_choice:
            if self.math_notation:
                what = "solve a math problem written in LaTeX notation"
            elif self.numbers and self.question_words >= 20:
                what = "solve a word problem with numbers"
            else:
                what = "answer a question"
            return f"Task: {what} and write the final answer as {self.answers}."
        if self.substitution or self.blank:
            source = ", names or words taken from the sentence" if self.choices_from_question else ""
            return f"Task: fill the blank in a sentence with the right one of {n} options{source}."
        if self.continuation:
            return f"Task: choose the most plausible ending of a text among {n} continuations."
        about = " about a passage" if self.passage else ""
        if self.answers == "yes / no":
            return f"Task: answer a yes/no question{about}."
        return f"Task: answer a question{about} by choosing the right one of {n} options ({self.answers})."

    def facts(self) -> list[str]:
        """The measured facts, each a short phrase."""
        if self.multiple_choice:
            out = [f"multiple choice with {self.n_choices} choices", f"the choices are {self.answers}"]
        else:
            out = ["free-form generation", f"the answer is {self.answers}"]
        out.append(f"{length_class(self.question_words)} (mean {self.question_words:.0f} words)")
        optional = (
            (self.passage, "each question follows a passage"),
            (self.blank, "the question has a blank (_) to fill"),
            (self.continuation, "the choices continue the text"),
            (self.substitution, "each choice is put into the sentence"),
            (self.choices_from_question, "the choices are taken from the question"),
            (self.math_notation, "the questions use LaTeX math notation"),
            (self.numbers and not self.math_notation, "the questions contain numbers"),
            (self.pattern is not None, f'most questions read "{self.pattern}"'),
        )
        return out + [text for holds, text in optional if holds]
