"""Prompt construction for scoring and decoding, in two styles.

plain: lm-eval-harness strings, exactly as stored on the Example.
chat: one user turn rendered by the tokenizer's chat template (duck-typed: only
``apply_chat_template`` is called, so no model code is imported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from coral_env.tasks.base import Example, PromptStyle
from coral_env.tasks.registry import TaskSpec, get_task

DEFAULT_MC_INSTRUCTION = "Answer with the text of the correct option."
DEFAULT_GEN_INSTRUCTION = "Solve the problem step by step, then finish with 'The answer is X.'"


class ChatTokenizer(Protocol):
    """Anything with a Hugging Face style ``apply_chat_template``."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def _spec(task: str | TaskSpec | None) -> TaskSpec | None:
    return None if task is None else get_task(task)


def _render_chat(tokenizer: ChatTokenizer | None, content: str) -> str:
    if tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
        raise ValueError(
            "style='chat' needs a tokenizer with apply_chat_template; pass tokenizer=... or use style='plain'"
        )
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    if not isinstance(rendered, str):
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(rendered).__name__}, not str")
    return rendered


def chat_content(example: Example, task: str | TaskSpec | None = None) -> str:
    """The user message of a chat prompt: the question, the options (multiple choice), and the
    task's instruction."""
    spec = _spec(task)
    if example.is_multiple_choice:
        options = "\n".join(f"- {choice}" for choice in example.choices)
        instruction = (spec.chat_instruction if spec else "") or DEFAULT_MC_INSTRUCTION
        return f"{example.question}\n\nOptions:\n{options}\n\n{instruction}"
    instruction = (spec.chat_instruction if spec else "") or DEFAULT_GEN_INSTRUCTION
    return f"{example.question}\n\n{instruction}"


def _check_style(style: str) -> None:
    if style not in ("plain", "chat"):
        raise ValueError(f"style must be 'plain' or 'chat', got {style!r}")


def build_requests(
    example: Example,
    style: PromptStyle = "plain",
    tokenizer: ChatTokenizer | None = None,
    *,
    task: str | TaskSpec | None = None,
) -> list[tuple[str, str]]:
    """(context, continuation) pairs to score, one per choice of a multiple-choice example.

    plain: the lm-eval pairs (continuations keep their leading space). chat: the rendered chat
    prompt as every context and the bare choice text as continuation. ``task`` picks the
    task's chat instruction (a generic one otherwise).
    """
    _check_style(style)
    if not example.is_multiple_choice:
        raise ValueError(f"example {example.uid!r} is generative; use build_generation_prompt")
    if style == "plain":
        return list(zip(example.contexts, example.continuations))
    context = _render_chat(tokenizer, chat_content(example, task))
    return [(context, choice) for choice in example.choices]


def build_generation_prompt(
    example: Example,
    style: PromptStyle = "plain",
    tokenizer: ChatTokenizer | None = None,
    *,
    task: str | TaskSpec | None = None,
) -> str:
    """The prompt to decode from for a generative example (plain: lm-eval's context)."""
    _check_style(style)
    if example.is_multiple_choice:
        raise ValueError(f"example {example.uid!r} is multiple choice; use build_requests")
    if style == "plain":
        return example.contexts[0]
    return _render_chat(tokenizer, chat_content(example, task))


def stop_sequences(task: str | TaskSpec, style: PromptStyle = "plain") -> list[str]:
    """Strings that end greedy decoding for a generative task (chat: the EOS token suffices,
    plus the plain markers a chat model might still echo)."""
    _check_style(style)
    spec = get_task(task)
    if spec.kind != "generative":
        return []
    if style == "plain":
        return list(spec.stop) or ["Question:", "\n\n"]
    return [s for s in spec.stop if s.strip()]


def input_prompts(
    examples: Sequence[Example],
    style: PromptStyle = "plain",
    tokenizer: ChatTokenizer | None = None,
    *,
    task: str | TaskSpec | None = None,
) -> list[str]:
    """The model-facing input of each example, without any answer: the (first) context for
    multiple choice, the decoding prompt for generative tasks. Unlabeled data for TTL, SLOT and
    task vectors."""
    return [
        build_requests(ex, style, tokenizer, task=task)[0][0]
        if ex.is_multiple_choice
        else build_generation_prompt(ex, style, tokenizer, task=task)
        for ex in examples
    ]
