"""The task registry: a ``TaskSpec`` per task and the twelve benchmark tasks of the papers."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from coral_env.tasks.base import TaskKind
from coral_env.tasks.converters import (
    Converter,
    convert_arc,
    convert_boolq,
    convert_gsm8k,
    convert_hellaswag,
    convert_lettered_mc,
    convert_math,
    convert_piqa,
    convert_social_i_qa,
    convert_winogrande,
)
from coral_env.tasks.errors import UnknownTaskError

Domain = Literal["in", "out", "synthetic", "user"]
AnswerType = Literal["choice", "number", "math", "text"]
DOMAINS: tuple[str, ...] = ("in", "out", "synthetic", "user")
SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")
# Built-in rows: returns {split name: rows}; used by synthetic tasks instead of files.
RowGenerator = Callable[[], Mapping[str, list[Mapping[str, Any]]]]


@dataclass(frozen=True)
class TaskSpec:
    """Everything needed to load one task and format its prompts.

    Attributes:
        name: registry key (lower case, e.g. "arc_easy").
        kind: "multiple_choice" (log-likelihood scoring) or "generative" (greedy decoding).
        domain: "in" (the six commonsense tasks), "out", "synthetic" or "user".
        convert: row -> Example converter for the dataset's schema.
        description: one line for listings and task contexts.
        hf_id / hf_config: Hugging Face dataset id and config, None where none is public.
        hf_splits: Hub splits read with source="hub" (labelled ones only; by default the same
            ones as the offline mirror, so local and Hub loads give the same examples).
        local_dir: folder name under the data directory.
        local_splits: split files ``<local_dir>/<split>.jsonl`` the offline mirror provides
            (tasks with no mirror list the files a user may supply).
        files: explicit (split, path) pairs (user tasks); bypasses the data directory.
        generate: built-in row generator (synthetic tasks); bypasses files entirely.
        answer_type: how generative answers are compared ("number", "math", "text").
        stop: plain-style stop sequences for generative tasks.
        chat_instruction: the instruction appended to the question in chat-style prompts.
        schema: a short description of the expected row fields, quoted in error messages.
    """

    name: str
    kind: TaskKind
    domain: Domain
    convert: Converter
    description: str
    hf_id: str | None = None
    hf_config: str | None = None
    hf_splits: tuple[str, ...] = ()
    local_dir: str | None = None
    local_splits: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    generate: RowGenerator | None = None
    answer_type: AnswerType = "choice"
    stop: tuple[str, ...] = ()
    chat_instruction: str = ""
    schema: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("multiple_choice", "generative"):
            raise ValueError(f"TaskSpec.kind must be 'multiple_choice' or 'generative', got {self.kind!r}")
        if self.domain not in DOMAINS:
            raise ValueError(f"TaskSpec.domain must be one of {DOMAINS}, got {self.domain!r}")
        for split in (*self.hf_splits, *self.local_splits, *(s for s, _ in self.files)):
            if split not in SPLIT_NAMES:
                raise ValueError(f"TaskSpec split {split!r} must be one of {SPLIT_NAMES}")

    @property
    def is_multiple_choice(self) -> bool:
        return self.kind == "multiple_choice"


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec, *, overwrite: bool = False) -> TaskSpec:
    """Add a task to the registry (``overwrite=True`` replaces one of the same name)."""
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"task {spec.name!r} is already registered; pick another name or pass overwrite=True")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_task(name: str) -> None:
    """Remove a task (used by tests and by users replacing their own tasks)."""
    _REGISTRY.pop(name, None)


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The spec of a registered task, or of the user task a config file (``*.json``,
    ``*.yaml``) describes; ``UnknownTaskError`` (a KeyError) lists known names."""
    if isinstance(name, TaskSpec):
        return name
    from coral_env.tasks.task_files import resolve_task  # lazy: it imports this module

    key = resolve_task(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    known = sorted(_REGISTRY)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    raise UnknownTaskError(str(name), known, close[0] if close else None)


def list_tasks(domain: Domain | None = None) -> list[str]:
    """Names of registered tasks (all, or one domain), in registration order."""
    if domain is not None and domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS} or None, got {domain!r}")
    return [n for n, spec in _REGISTRY.items() if domain is None or spec.domain == domain]


_MC_CHAT = "Answer with the text of the correct option."
_LETTERED_SCHEMA = (
    "fields: question, optional context/case, choices (list) or A/B/C/D or opa..opd, "
    "answer (letter, 0-based index or option text)"
)

BENCHMARK_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        "arc_challenge",
        "multiple_choice",
        "in",
        convert_arc,
        "Grade-school science questions that retrieval and co-occurrence methods fail on.",
        hf_id="allenai/ai2_arc",
        hf_config="ARC-Challenge",
        hf_splits=("train", "test"),
        local_dir="arc_challenge",
        local_splits=("train", "test"),
        chat_instruction=_MC_CHAT,
        schema="allenai/ai2_arc fields: id, question, choices {text, label}, answerKey",
    ),
    TaskSpec(
        "arc_easy",
        "multiple_choice",
        "in",
        convert_arc,
        "Grade-school science questions, easy partition.",
        hf_id="allenai/ai2_arc",
        hf_config="ARC-Easy",
        hf_splits=("train", "test"),
        local_dir="arc_easy",
        local_splits=("train", "test"),
        chat_instruction=_MC_CHAT,
        schema="allenai/ai2_arc fields: id, question, choices {text, label}, answerKey",
    ),
    TaskSpec(
        "hellaswag",
        "multiple_choice",
        "in",
        convert_hellaswag,
        "Pick the most plausible continuation of an everyday scene or how-to text.",
        hf_id="Rowan/hellaswag",
        hf_splits=("validation",),
        local_dir="hellaswag",
        local_splits=("validation",),
        chat_instruction="Which option is the most plausible continuation? Answer with the text of that option.",
        schema="Rowan/hellaswag fields: activity_label, ctx (or ctx_a, ctx_b), endings, label",
    ),
    TaskSpec(
        "boolq",
        "multiple_choice",
        "in",
        convert_boolq,
        "Yes/no questions about a Wikipedia passage.",
        hf_id="google/boolq",
        hf_splits=("validation",),
        local_dir="boolq",
        local_splits=("validation",),
        chat_instruction="Answer with yes or no.",
        schema="google/boolq fields: question, passage, answer (bool)",
    ),
    TaskSpec(
        "piqa",
        "multiple_choice",
        "in",
        convert_piqa,
        "Physical commonsense: choose the better of two solutions to a goal.",
        hf_id="ybisk/piqa",
        hf_splits=("validation",),
        local_dir="piqa",
        local_splits=("validation",),
        chat_instruction="Which solution achieves the goal? Answer with the text of that solution.",
        schema="ybisk/piqa fields: goal, sol1, sol2, label (0/1)",
    ),
    TaskSpec(
        "winogrande",
        "multiple_choice",
        "in",
        convert_winogrande,
        "Pronoun resolution: which of two names fills the blank in a sentence.",
        hf_id="allenai/winogrande",
        hf_config="winogrande_xl",
        hf_splits=("validation",),
        local_dir="winogrande",
        local_splits=("validation",),
        chat_instruction="Which option fills the blank (_)? Answer with that option.",
        schema="allenai/winogrande fields: sentence (with _), option1, option2, answer ('1'/'2')",
    ),
    TaskSpec(
        "gsm8k",
        "generative",
        "out",
        convert_gsm8k,
        "Grade-school math word problems with a numeric final answer.",
        hf_id="openai/gsm8k",
        hf_config="main",
        hf_splits=("train", "test"),
        local_dir="gsm8k",
        local_splits=("train", "test"),
        answer_type="number",
        stop=("Question:", "\n\n"),
        chat_instruction="Solve the problem step by step, then finish with "
        "'The answer is N.' where N is the final number.",
        schema="openai/gsm8k fields: question, answer (solution ending in '#### N')",
    ),
    TaskSpec(
        "math",
        "generative",
        "out",
        convert_math,
        "Competition mathematics (MATH-500 subset) with a LaTeX final answer.",
        hf_id="HuggingFaceH4/MATH-500",
        hf_splits=("test",),
        local_dir="math500",
        local_splits=("test",),
        answer_type="math",
        stop=("Problem:",),
        chat_instruction="Solve the problem step by step and put the final answer in \\boxed{}.",
        schema="HuggingFaceH4/MATH-500 fields: problem, solution, answer",
    ),
    TaskSpec(
        "divlogiceval",
        "multiple_choice",
        "out",
        convert_lettered_mc,
        "Logical reasoning over diverse natural-language statements (multiple choice).",
        hf_id="ttchungc/DivLogicEval",
        hf_splits=("test",),
        local_dir="divlogiceval",
        local_splits=("test",),
        chat_instruction=_MC_CHAT,
        schema=_LETTERED_SCHEMA,
    ),
    TaskSpec(
        "social_i_qa",
        "multiple_choice",
        "out",
        convert_social_i_qa,
        "Social commonsense: people's motivations, reactions and next actions.",
        hf_id="allenai/social_i_qa",
        hf_splits=("validation",),
        local_dir="social_i_qa",
        local_splits=("validation",),
        chat_instruction=_MC_CHAT,
        schema="allenai/social_i_qa fields: context, question, answerA, answerB, answerC, label ('1'-'3')",
    ),
    TaskSpec(
        "codemmlu",
        "multiple_choice",
        "out",
        convert_lettered_mc,
        "Multiple-choice questions on programming knowledge and code understanding.",
        hf_id="Fsoft-AIC/CodeMMLU",
        hf_config="programming_syntax",
        hf_splits=("test",),
        local_dir="codemmlu",
        local_splits=("test",),
        chat_instruction=_MC_CHAT,
        schema=_LETTERED_SCHEMA,
    ),
    TaskSpec(
        "jama",
        "multiple_choice",
        "out",
        convert_lettered_mc,
        "JAMA Clinical Challenge: diagnosis and management questions on clinical cases.",
        local_dir="jama",
        local_splits=("test",),
        chat_instruction=_MC_CHAT,
        schema=_LETTERED_SCHEMA + " (e.g. the ChallengeClinicalQA scraper's case, question, opa..opd, answer_idx)",
    ),
)

for _spec in BENCHMARK_TASKS:
    register_task(_spec)

IN_DOMAIN: tuple[str, ...] = tuple(s.name for s in BENCHMARK_TASKS if s.domain == "in")
OUT_OF_DOMAIN: tuple[str, ...] = tuple(s.name for s in BENCHMARK_TASKS if s.domain == "out")
