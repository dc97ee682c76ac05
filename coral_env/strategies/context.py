"""What a strategy runs against (:class:`StrategyContext`) and what it returns
(:class:`StrategyOutcome`): the two types every family runner takes and gives.

:func:`coral_env.strategies.runners.execute` calls a family's runner and restores the adapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..backend.evaluator import EvalResult, GenerationConfig, evaluate
from ..backend.lora import AdapterLayout
from ..backend.scoring import ScoringConfig
from ..tasks import Example, input_prompts


class AdapterSource(Protocol):
    """Where TTS gets adapters and embeddings: the generator (+ CVAE) and the prompt encoder."""

    def generate(self, prompts: list[str]) -> torch.Tensor:
        """A flat adapter vector (generated, and aligned where a CVAE exists) for a prompt batch."""

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Sentence embeddings, shape (n, C)."""


@dataclass
class TTLConfig:
    """Fixed constants of test-time learning (the action sets steps, lr, batch, shuffle).

    ``scale`` is the paper's lambda in S(x) = lambda * exp(log PPL(x) - log P0) for PPL > P0;
    ``ppl_threshold`` is P0 (TLM uses e^3). ``objective``: what S(x) weights, ``log_ppl``
    (default, TLM's form: the mean token NLL) or ``ppl`` (DeGAML Eq. 12 as written,
    S(x) * PPL(x)). The gradient of S * PPL is S * PPL * grad(log PPL), i.e. a weight growing
    with PPL^2, which lets the least familiar inputs dominate; log_ppl keeps the weight at S
    (benchmarks/ttl_objective.md measures both once).
    """

    scale: float = 1.0
    ppl_threshold: float = math.exp(3.0)
    max_len: int = 256
    objective: str = "log_ppl"

    def __post_init__(self) -> None:
        if self.objective not in ("log_ppl", "ppl"):
            raise ValueError(f"TTLConfig.objective must be 'log_ppl' or 'ppl', got {self.objective!r}")


@dataclass
class StrategyContext:
    """What a strategy runs against. The model's current LoRA weights are the adapter to adapt.

    Attributes:
        model: a PEFT-wrapped causal LM; ``layout`` is bound to it.
        task: task name (prompt formats, answer extraction).
        support: unlabeled support examples (TTL data, TTS prompt batches).
        adapters: generator/encoder access for TTS (None: TTS is unavailable).
        prompts_per_batch: prompts in one TTS batch (the generator's N).
        seed: seeds TTL shuffling and TTS batch sampling.
        scores: a cache for :meth:`evaluate_adapter` that outlives the strategy (the runtime's),
            so the TTS methods share their adapters' evaluations; None: no cache.
    """

    model: object
    tokenizer: object
    layout: AdapterLayout
    task: str
    support: list[Example]
    style: str = "plain"
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    adapters: AdapterSource | None = None
    prompts_per_batch: int = 8
    seed: int = 0
    ttl: TTLConfig = field(default_factory=TTLConfig)
    scores: dict | None = None

    def evaluate(self, examples: list[Example], **kwargs) -> EvalResult:
        """Evaluate with the model's current adapter."""
        return evaluate(
            self.model,
            self.tokenizer,
            examples,
            task=self.task,
            style=self.style,
            scoring=self.scoring,
            generation=self.generation,
            **kwargs,
        )

    def evaluate_adapter(self, adapter: torch.Tensor, examples: list[Example]) -> EvalResult:
        """Evaluate ``adapter`` (loaded into the model) on ``examples``, once per (adapter,
        examples) when the context has a ``scores`` cache."""
        from ..backend.lora import adapter_hash

        key = (self.task, tuple(ex.uid for ex in examples), adapter_hash(adapter)) if self.scores is not None else None
        if key is not None and key in self.scores:
            return self.scores[key]
        self.layout.set_flat(adapter)
        result = self.evaluate(examples)
        if key is not None:
            self.scores[key] = result
        return result

    def prompt_texts(self, examples: list[Example]) -> list[str]:
        """The unlabeled inputs the model sees (the prompt without any answer)."""
        return input_prompts(examples, self.style, self.tokenizer, task=self.task)


@dataclass
class StrategyOutcome:
    """Predictions on the evaluated examples, the adapter the strategy produced, and its cost.

    ``adapter`` is the transformed flat adapter for chaining (TTL, LORA); None when the family
    does not produce one (TTS, Latent act at inference time). A runner that returns one must
    build it without looking at the evaluated ``examples``: the runtime scores it on other
    splits directly instead of running the strategy again.
    """

    result: EvalResult
    adapter: torch.Tensor | None
    cost: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
