"""Core task types: one example, one task's splits, the split sizes.

The tasks layer imports nothing else of ours (it is the bottom layer) and never touches torch models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TaskKind = Literal["multiple_choice", "generative"]
PromptStyle = Literal["plain", "chat"]


@dataclass(frozen=True)
class Example:
    """One evaluation item, already converted from its dataset's schema.

    Attributes:
        uid: stable id, unique within the task (survives reshuffles).
        question: the user-facing text of the problem (passage + question; no answer options),
            used for chat prompts, sentence embeddings, TTL inputs and task contexts.
        contexts: plain-style (lm-eval-harness-like) context strings. Multiple choice: one per
            choice (usually all equal; WinoGrande's partial scoring makes them differ).
            Generative: exactly one, the prompt to decode from.
        continuations: multiple choice: one continuation per choice, leading space included
            (" Paris"). Generative: empty.
        choices: multiple choice: the choice texts without the leading delimiter (used for
            display and for acc_norm's character-length normalisation). Generative: empty.
        label: multiple choice: index of the gold choice. Generative: -1.
        answer: gold answer string: for multiple choice ``choices[label]``; for generative the
            normalised final answer (GSM8K number, MATH boxed expression).
    """

    uid: str
    question: str
    contexts: tuple[str, ...]
    continuations: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    label: int = -1
    answer: str = ""

    @property
    def is_multiple_choice(self) -> bool:
        return len(self.continuations) > 0


@dataclass(frozen=True)
class SplitSizes:
    """How many examples each split holds (``None`` = all that remain, capped by ``max_train``)."""

    support: int = 64
    validation: int = 100
    test: int = 300
    max_train: int | None = 5000

    def __post_init__(self) -> None:
        for name in ("support", "validation", "test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"SplitSizes.{name} must be a non-negative int, got {value!r}")
        if self.max_train is not None and self.max_train < 0:
            raise ValueError(f"SplitSizes.max_train must be >= 0 or None, got {self.max_train!r}")


@dataclass
class TaskSplits:
    """Deterministic, disjoint splits of one task.

    train: checkpoint collection only. support: unlabeled prompts for generator conditioning,
    TTL data and TTS batches (its first ``n_labeled_support`` examples may be shown with labels
    as few-shot context). validation: the reward. test: reported results only.
    """

    name: str
    kind: TaskKind
    train: list[Example] = field(default_factory=list)
    support: list[Example] = field(default_factory=list)
    validation: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    n_labeled_support: int = 20

    def split(self, name: str) -> list[Example]:
        if name not in ("train", "support", "validation", "test"):
            raise ValueError(f"unknown split {name!r}; choose one of train, support, validation, test")
        return getattr(self, name)
