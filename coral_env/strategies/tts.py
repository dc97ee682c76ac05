"""TTS: test-time scaling over m adapters, one generated (and aligned) per support prompt batch.

The m batches always differ (a bootstrap resample when the support holds no more prompts than
a batch), so the ensemble is over different adapters; ``cost["adapter_diversity"]`` reports
their mean pairwise L2 distance.

Routing picks one adapter per question by Euclidean distance in sentence-embedding space:
``avg_sim_score`` (M1) the batch with the smallest mean distance between the question and the
batch's prompts; ``avg_prompt_embed`` (M2) the smallest distance to the batch's mean embedding.
Ensembles evaluate every adapter: ``max_confidence`` keeps the most confident adapter's answer,
``majority_vote`` the most frequent (ties broken by summed log-probabilities), ``sum_logprobs``
sums choice log-probabilities. Generative tasks vote on extracted final answers; there
``max_confidence`` and ``sum_logprobs`` fall back to the vote (noted in the outcome).
"""

from __future__ import annotations

import collections

import numpy as np
import torch

from ..backend.evaluator import EvalResult, generative_result, mc_result
from ..tasks import extract_gsm8k_answer, extract_math_answer, get_task
from .context import StrategyContext, StrategyOutcome
from .schema import TTSStrategy

MAX_REDRAWS = 100


def sample_batches(n_prompts: int, m: int, size: int, seed: int) -> list[list[int]]:
    """m different batches of ``size`` prompt indices out of ``n_prompts``.

    With more prompts than ``size`` a batch holds distinct prompts; with ``size`` or fewer (the
    paper preset: 128 support prompts, 128 per batch) every batch would be the whole support
    and give m identical adapters, so each batch is a bootstrap resample (with replacement)
    instead. A batch equal to an earlier one is drawn again (up to ``MAX_REDRAWS`` times).
    """
    rng = np.random.default_rng(seed)
    replace = size >= n_prompts
    batches: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    for _ in range(m):
        for _ in range(MAX_REDRAWS):
            batch = sorted(rng.choice(n_prompts, size=size, replace=replace).tolist())
            if tuple(batch) not in seen:
                break
        seen.add(tuple(batch))
        batches.append(batch)
    return batches


def mean_pairwise_distance(adapters: list[torch.Tensor]) -> float:
    """Mean L2 distance over the pairs of flat adapters (0.0 for fewer than two)."""
    if len(adapters) < 2:
        return 0.0
    return float(torch.pdist(torch.stack([a.float().reshape(-1) for a in adapters])).mean())


def route(method: str, questions: torch.Tensor, prompts: torch.Tensor, batches: list[list[int]]) -> list[int]:
    """Batch index per question (questions (n, C), prompts (P, C) embeddings)."""
    scores = []
    for batch in batches:
        members = prompts[batch]
        if method == "avg_sim_score":
            scores.append(torch.cdist(questions, members).mean(dim=1))
        else:
            scores.append(torch.cdist(questions, members.mean(dim=0, keepdim=True))[:, 0])
    return torch.stack(scores, dim=1).argmin(dim=1).tolist()


def combine_choice_scores(method: str, results: list[EvalResult]) -> list[np.ndarray]:
    """Per question, choice scores whose argmax is the ensemble's answer."""
    combined = []
    for q in range(results[0].n):
        lps = np.stack([r.logprobs[q] for r in results])  # (m, n_choices)
        if method == "sum_logprobs":
            combined.append(lps.sum(0))
        elif method == "max_confidence":
            best = int(np.argmax([r.confidences[q] for r in results]))
            combined.append(lps[best])
        else:  # majority_vote: votes dominate, summed log-probabilities break ties
            votes = np.bincount(lps.argmax(1), minlength=lps.shape[1]).astype(np.float64)
            combined.append(votes * 1e6 + lps.sum(0))
    return combined


def _extractor(task: str):
    answer_type = get_task(task).answer_type
    if answer_type in ("number", "gsm8k"):
        return extract_gsm8k_answer
    if answer_type == "math":
        return extract_math_answer
    return lambda text: text.strip()


def vote_outputs(task: str, results: list[EvalResult]) -> list[str]:
    """Per question, the output whose extracted answer is most frequent (first wins ties)."""
    extract = _extractor(task)
    chosen = []
    for q in range(results[0].n):
        outputs = [r.outputs[q] for r in results]
        answers = [extract(o) for o in outputs]
        counts = collections.Counter(a for a in answers if a is not None)
        if not counts:
            chosen.append(outputs[0])
            continue
        winner = max(counts, key=lambda a: (counts[a], -answers.index(a)))
        chosen.append(outputs[answers.index(winner)])
    return chosen


def run(strategy: TTSStrategy, ctx: StrategyContext, examples) -> StrategyOutcome:
    if ctx.adapters is None:
        raise ValueError(
            "TTS needs a generator to build one adapter per prompt batch; build the "
            "environment with its stage-1 artifacts (`coral setup`)"
        )
    texts = [ex.question for ex in ctx.support]
    if not texts:
        raise ValueError(f"task {ctx.task!r} has no support prompts to sample TTS batches from")
    batches = sample_batches(len(texts), strategy.num_prompt_batches, ctx.prompts_per_batch, ctx.seed)
    adapters = [ctx.adapters.generate([texts[i] for i in b]) for b in batches]
    notes: list[str] = []
    mc = examples[0].is_multiple_choice
    if strategy.is_routing:
        questions = ctx.adapters.embed([ex.question for ex in examples])
        prompts = ctx.adapters.embed(texts)
        choice = route(strategy.method, questions, prompts, batches)
        logprobs: list = [None] * len(examples)
        outputs: list = [None] * len(examples)
        groups = sorted(set(choice))
        for j in groups:
            idx = [i for i, c in enumerate(choice) if c == j]
            part = ctx.evaluate_adapter(adapters[j], [examples[i] for i in idx])
            for k, i in enumerate(idx):
                if mc:
                    logprobs[i] = part.logprobs[k]
                else:
                    outputs[i] = part.outputs[k]
        result = mc_result(ctx.task, examples, logprobs) if mc else generative_result(ctx.task, examples, outputs)
        evaluations = len(groups)
    else:
        results = [ctx.evaluate_adapter(adapter, examples) for adapter in adapters]  # shared by the ensembles
        if mc:
            result = mc_result(ctx.task, examples, combine_choice_scores(strategy.method, results))
        else:
            if strategy.method != "majority_vote":
                notes.append(f"{strategy.method} on a generative task falls back to majority_vote")
            result = generative_result(ctx.task, examples, vote_outputs(ctx.task, results))
        evaluations = len(results)
    cost = {
        "evaluations": evaluations,
        "adapters_generated": len(adapters),
        "adapter_diversity": mean_pairwise_distance(adapters),
    }
    return StrategyOutcome(result, None, cost, notes)
