"""Evaluate a model on task examples: multiple-choice log-likelihood or greedy generation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..tasks import Example, answers_match, build_generation_prompt, build_requests, get_task, stop_sequences
from .decoding import generate_greedy
from .metrics import auc, balanced_accuracy, wilson_ci
from .scoring import HeadDelta, ScoringConfig, SlotSpec, score_continuations

METRICS = ("accuracy", "acc_norm", "balanced_accuracy", "auc")


@dataclass
class GenerationConfig:
    """Greedy decoding limits for generative tasks."""

    max_new_tokens: int = 256
    batch_size: int = 8


@dataclass
class EvalResult:
    """Per-example outcomes and summary metrics of one evaluation.

    ``logprobs`` (multiple choice) keeps every choice's summed log-probability, which TTS
    ensembles combine; ``outputs`` (generative) keeps the decoded texts. ``confidences`` is the
    softmax probability of the predicted choice (multiple choice) and NaN for generative tasks:
    greedy decoding gives no label-free confidence here, and nothing derived from the labels may
    sit where ``max_confidence`` reads.
    """

    task: str
    kind: str
    correct: np.ndarray
    predictions: list
    labels: list
    confidences: np.ndarray
    logprobs: list[np.ndarray] = field(default_factory=list)
    correct_norm: np.ndarray | None = None
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_ci(int(self.correct.sum()), self.n)

    @property
    def acc_norm(self) -> float | None:
        return None if self.correct_norm is None else float(self.correct_norm.mean())

    @property
    def two_answer(self) -> bool:
        return bool(self.logprobs) and all(len(lp) == 2 for lp in self.logprobs)

    @property
    def balanced_accuracy(self) -> float | None:
        if not self.two_answer:
            return None
        return balanced_accuracy(np.array(self.labels), np.array(self.predictions))

    @property
    def auc(self) -> float | None:
        if not self.two_answer:
            return None
        scores = np.array([lp[1] - lp[0] for lp in self.logprobs])
        return auc(np.array(self.labels) == 1, scores)

    def metric(self, name: str) -> float:
        """A named metric; prior-insensitive ones fall back to accuracy where undefined."""
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
        value = getattr(self, name)
        return self.accuracy if value is None else float(value)

    def summary(self) -> dict:
        out = {
            "task": self.task,
            "kind": self.kind,
            "n": self.n,
            "accuracy": self.accuracy,
            "ci95": list(self.ci95),
            "seconds": round(self.seconds, 3),
        }
        for name in ("acc_norm", "balanced_accuracy", "auc"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.correct_norm is not None:
            out["acc_norm_ci95"] = list(wilson_ci(int(self.correct_norm.sum()), self.n))
        return out


def mc_result(
    task: str, examples: list[Example], logprobs: list[torch.Tensor | np.ndarray], seconds: float = 0.0
) -> EvalResult:
    """Metrics from per-choice log-probabilities (also used to score TTS ensembles)."""
    lps = [np.asarray(lp, dtype=np.float64) for lp in logprobs]
    preds = [int(lp.argmax()) for lp in lps]
    norm_preds = [int((lp / np.array([max(len(c), 1) for c in ex.choices])).argmax()) for lp, ex in zip(lps, examples)]
    labels = [ex.label for ex in examples]
    conf = np.array([float(np.exp(lp - lp.max()).max() / np.exp(lp - lp.max()).sum()) for lp in lps])
    return EvalResult(
        task,
        "multiple_choice",
        np.array([p == y for p, y in zip(preds, labels)]),
        preds,
        labels,
        conf,
        lps,
        np.array([p == y for p, y in zip(norm_preds, labels)]),
        seconds=seconds,
    )


def evaluate(
    model,
    tokenizer,
    examples: list[Example],
    *,
    task: str = "",
    style: str = "plain",
    scoring: ScoringConfig | None = None,
    generation: GenerationConfig | None = None,
    head_delta: HeadDelta | SlotSpec | None = None,
) -> EvalResult:
    """Score ``examples`` with ``model`` (its current adapter, if any).

    Multiple choice: log-likelihood of each choice continuation. Generative: greedy decoding,
    cut at the task's stop strings, final answer extracted and compared to the gold answer.
    """
    start = time.perf_counter()
    if not examples:
        raise ValueError("no examples to evaluate")
    if examples[0].is_multiple_choice:
        requests = [build_requests(ex, style, tokenizer, task=task or None) for ex in examples]
        logprobs = score_continuations(model, tokenizer, requests, scoring, head_delta)
        return mc_result(task, examples, logprobs, time.perf_counter() - start)
    if head_delta is not None:
        raise ValueError(
            "head_delta applies to multiple-choice scoring; generative SLOT decoding goes through the Latent strategy"
        )
    generation = generation or GenerationConfig()
    prompts = [build_generation_prompt(ex, style, tokenizer, task=task or None) for ex in examples]
    outputs = generate_greedy(
        model,
        tokenizer,
        prompts,
        generation.max_new_tokens,
        tuple(stop_sequences(task, style)) if task else (),
        generation.batch_size,
    )
    return generative_result(task, examples, outputs, time.perf_counter() - start)


def generative_result(task: str, examples: list[Example], outputs: list[str], seconds: float = 0.0) -> EvalResult:
    """Metrics from decoded texts (also used by TTS majority vote on generative tasks)."""
    answer_type = get_task(task).answer_type if task else "text"
    correct = np.array([answers_match(answer_type, out, ex.answer) for out, ex in zip(outputs, examples)])
    return EvalResult(
        task,
        "generative",
        correct,
        outputs,
        [ex.answer for ex in examples],
        np.full(len(outputs), np.nan),
        outputs=outputs,
        seconds=seconds,
    )
