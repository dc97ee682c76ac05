"""Task contexts: what the policy reads about a task, enough to tell tasks apart.

A context has five parts, in this order:

1. ``N_CONTEXT_EXAMPLES`` verbatim labeled support examples, cut to ``EXAMPLE_BUDGET``
   characters, their parts named after the task's shape ("Passage" / "Question", "Text" /
   "Endings", "Sentence"), so the policy sees the data itself;
2. the answer-format line, which the environment knows for certain;
3. a one-sentence task statement and
4. a line of facts, both measured on the support split (``task_shape.TaskShape``: kind,
   number of choices, what the answers look like, question length, passages, blanks,
   continuations, numbers, math notation, a shared question wording);
5. a short neutral task description written by a local instruct model from a few labeled
   support examples, with the paper's prompt (it asked GPT-4o mini; we ask
   ``EnvConfig.context_model``: the environment's own model, or the packaged
   Qwen2.5-Coder-0.5B at the cpu preset), written once per task and cached as JSON next to
   the artifacts. It comes last: a 0.5B writer often describes one example rather than the
   task, and the sentence encoder of the SB3 wrappers reads only the first 256 word pieces,
   which the parts above fill (``benchmarks/context_id.md`` measures the order).

Users can pass their own text (``gym.make(..., context="...")``), used as is.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from typing import Sequence

import torch

from ..backend.io import atomic_write_json, corrupt, read_json
from ..tasks import Example, TaskSplits
from .task_shape import TaskShape, has_passage, split_passage

CONTEXT_PROMPT = (
    "You are given a small set of example question-answer pairs from an unknown dataset. Your "
    "task is to infer the underlying task definition and write a concise, professional task "
    "description suitable for inclusion in a machine learning benchmark paper.\n\n"
    "Instructions:\n1. Do not mention specific example questions or answers.\n"
    "2. Infer the core objective, skills being evaluated, and type of reasoning required.\n"
    "3. Describe what the model is expected to do and what competencies are being tested.\n"
    "4. Write in neutral, academic language.\n\n"
    "Output a single self-contained task description paragraph.\n\n"
    "Examples from the dataset are provided below:\n\n{examples}"
)
N_EXAMPLES = 4
"""Labeled examples shown to the description writer."""
N_CONTEXT_EXAMPLES = 3
"""Verbatim labeled examples in the context itself."""
EXAMPLE_BUDGET = 600
"""Characters for the verbatim examples together (each gets an equal share)."""
MAX_NEW_TOKENS = 96
CACHE_VERSION = 2  # v1 files cached the whole context; v2 caches only the description
_RETRY = "delete it (the next reset writes the context again)"


def labeled_support(splits: TaskSplits) -> list[Example]:
    """The support examples whose labels a context may show."""
    return list(splits.support[: splits.n_labeled_support])


def format_examples(examples: Sequence[Example], n: int = N_EXAMPLES) -> str:
    """The first ``n`` examples as question-answer pairs (the description writer's input)."""
    rows = []
    for ex in list(examples)[:n]:
        question = ex.question.strip()
        if ex.choices:
            question += "\nOptions: " + " | ".join(ex.choices)
        rows.append(f"Question: {question}\nAnswer: {ex.answer}")
    return "\n\n".join(rows)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 3)].rstrip() + "..."


def _labels(shape: TaskShape | None) -> tuple[str, str]:
    """What an example's text and its options are called, from the task's shape."""
    if shape is not None and shape.continuation:
        return "Text", "Endings"
    if shape is not None and (shape.blank or shape.substitution):
        return "Sentence", "Options"
    return "Question", "Options"


def example_block(
    examples: Sequence[Example],
    k: int = N_CONTEXT_EXAMPLES,
    budget: int = EXAMPLE_BUDGET,
    shape: TaskShape | None = None,
) -> str:
    """``k`` verbatim labeled examples in ``budget`` characters ("" for k = 0): each gets an equal
    share, split between the question (at least half) and the options; the answer is kept. With
    a ``shape``, the parts are named after it ("Text" / "Endings" for continuations, "Sentence"
    for blanks) and a passage is shown apart from its question, so a cut keeps the question."""
    chosen = list(examples)[:k]
    if not chosen:
        return ""
    text_label, options_label = _labels(shape)
    share = budget // len(chosen)
    rows = []
    for ex in chosen:
        answer = f"\nAnswer: {_cut(ex.answer, share // 4)}"
        options = " | ".join(ex.choices)
        head = f"{text_label}: "
        room = max(20, share - len(answer) - len(head) - (len(f"\n{options_label}: ") if options else 0))
        text = ex.question.strip()
        if shape is not None and shape.passage and has_passage(text):
            passage, question = split_passage(text)
            question = _cut(question, share // 4)
            room -= len("Passage: \n") + len(question)
            keep = min(share // 3, max(room // 2, room - len(options)))  # the passage's opening only
            text = f"Passage: {_cut(passage, keep)}\nQuestion: {question}"
            head, used = "", keep
        else:
            text = _cut(text, max(room // 2, room - len(options)))
            used = len(text)
        options = _cut(options, room - used) if options else ""
        rows.append(f"{head}{text}" + (f"\n{options_label}: {options}" if options else "") + answer)
    return "Examples:\n" + "\n\n".join(rows)


def format_line(splits: TaskSplits) -> str:
    """What the answers look like, from the data itself."""
    examples = splits.support or splits.validation
    if examples and examples[0].is_multiple_choice:
        counts = sorted({len(ex.choices) for ex in examples})
        options = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        return f"Answer format: multiple choice, {options} options, scored by log-likelihood."
    return "Answer format: a free-form answer generated by greedy decoding and compared exactly."


def _shape(splits: TaskSplits) -> TaskShape | None:
    examples = splits.support or splits.validation
    return TaskShape.measure(examples, labeled_support(splits)) if examples else None


def statement_line(splits: TaskSplits) -> str:
    """One sentence saying what the task asks, from its shape ("" without examples)."""
    shape = _shape(splits)
    return shape.statement() if shape is not None else ""


def facts_line(splits: TaskSplits) -> str:
    """What the support split shows about the task (kind, choices, answers, question length and
    shape), named in words (a sentence encoder barely tells 23 from 24)."""
    shape = _shape(splits)
    if shape is None:
        return f"Task facts: {splits.kind.replace('_', ' ')}."
    return "Task facts: " + "; ".join(shape.facts()) + "."


def compose_context(
    description: str,
    splits: TaskSplits,
    examples: Sequence[Example] | None = None,
    k: int = N_CONTEXT_EXAMPLES,
    budget: int = EXAMPLE_BUDGET,
) -> str:
    """``k`` verbatim examples (default: the first labeled support ones), answer format, task
    statement, facts and the description, separated by blank lines (empty parts left out)."""
    examples = labeled_support(splits) if examples is None else examples
    shape = _shape(splits)
    parts = [
        example_block(examples, k, budget, shape),
        format_line(splits),
        "\n".join(p for p in (statement_line(splits), facts_line(splits)) if p),
        f"Description: {description.strip()}" if description.strip() else "",
    ]
    return "\n\n".join(p for p in parts if p)


def context_prompt(examples: Sequence[Example], tokenizer) -> str:
    """The chat-formatted request for a task description."""
    content = CONTEXT_PROMPT.format(examples=format_examples(examples))
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


@torch.no_grad()
def write_description(
    model, tokenizer, examples: Sequence[Example], kind: str, max_new_tokens: int = MAX_NEW_TOKENS
) -> str:
    """Greedy task description from the base model (any adapter disabled)."""
    return write_descriptions(model, tokenizer, [examples], [kind], max_new_tokens)[0]


@torch.no_grad()
def write_descriptions(
    model, tokenizer, examples: Sequence[Sequence[Example]], kinds: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS
) -> list[str]:
    """Greedy task descriptions of several tasks in one left-padded batch (one decode for all)."""
    prompts = [context_prompt(ex, tokenizer) for ex in examples]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", add_special_tokens=False, padding=True)
    finally:
        tokenizer.padding_side = side
    disable = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    with disable:
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return [text.strip() or f"A {kind.replace('_', ' ')} task." for text, kind in zip(texts, kinds)]


def _description_path(runtime, name: str, splits: TaskSplits):
    """Where task ``name``'s description is cached (keyed by the writer, seed and shown examples)."""
    shown = format_examples(labeled_support(splits))
    key = hashlib.sha1(f"v{CACHE_VERSION}|{runtime.context_model_name}|{runtime.config.seed}|{shown}".encode())
    return runtime.paths.base / "contexts" / f"{name}-{key.hexdigest()[:12]}.json"


def write_missing_descriptions(runtime, tasks: Sequence[tuple[str, TaskSplits]]) -> int:
    """Write the descriptions of ``tasks`` ((name, splits) pairs) not cached yet, in one batch with
    one load of the context writer, which is released after; returns how many were written."""
    missing = [(name, splits) for name, splits in tasks if not _description_path(runtime, name, splits).exists()]
    if not missing:
        return 0
    model, tokenizer = runtime.context_writer()
    shown = [labeled_support(splits) for _, splits in missing]
    texts = write_descriptions(model, tokenizer, shown, [splits.kind for _, splits in missing])
    del model, tokenizer
    runtime.release_context_writer()
    for (name, splits), description in zip(missing, texts):
        path = _description_path(runtime, name, splits)
        atomic_write_json(path, {"task": name, "model": runtime.context_model_name, "description": description})
    return len(missing)


def task_context(runtime, name: str, splits: TaskSplits) -> str:
    """The context of task ``name``; its description is cached (written by the runtime's context
    model on first use), the rest is composed from the splits each time."""
    path = _description_path(runtime, name, splits)
    if not path.exists():
        write_missing_descriptions(runtime, [(name, splits)])
    cached = read_json(path, _RETRY)
    description = cached.get("description")
    if not isinstance(description, str):
        raise corrupt(path, "no 'description' text", _RETRY)
    return compose_context(description, splits)
