"""Latent (SLOT): a per-sample vector delta added to the final hidden state before the LM head.

delta starts at 0 and takes ``slot_steps`` Adam steps at ``slot_lr`` on the prompt's own
next-token loss. Only the head sees delta, so the prompt's hidden states H are computed once:
for multiple choice, by the scoring pass itself (``SlotSpec``); for generation, by one pass over
the prompts before decoding.
Two exact shortcuts make a step cost O(L*V) instead of a head forward+backward:
logits(H + delta) = H W^T + delta W^T, so H W^T is cached; and because delta is shared by all
positions, dLoss/d delta = W^T sum_i (softmax_i - onehot_i) / n, one vector-matrix product.
"""

from __future__ import annotations

import torch

from ..backend.decoding import generate_greedy
from ..backend.evaluator import generative_result
from ..backend.scoring import SlotSpec, decoder_and_head, head_logits, slot_adam
from ..tasks import stop_sequences
from .context import StrategyContext, StrategyOutcome
from .schema import LatentStrategy


@torch.no_grad()
def optimise_deltas(
    model,
    tokenizer,
    prompts: list[str],
    steps: int,
    lr: float,
    batch_size: int = 8,
    max_len: int = 256,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.Tensor:
    """One SLOT delta per prompt, shape (n, hidden), fp32, from its own decoder pass (used before
    greedy decoding; multiple-choice scoring fits the deltas inside its own pass). ``steps == 0``
    gives zeros."""
    decoder, head = decoder_and_head(model)
    weight = head.weight  # (V, d)
    deltas = torch.zeros(len(prompts), weight.shape[1])
    if steps == 0 or not prompts:
        return deltas
    spec = SlotSpec(steps, lr, betas, eps)
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(
            prompts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_len,
            add_special_tokens=False,
        )
        enc = enc.to(weight.device)
        hidden = decoder(**enc).last_hidden_state[:, :-1]  # positions that predict a next token
        keep = enc["attention_mask"][:, 1:].bool()
        segment = torch.arange(hidden.shape[0], device=weight.device)[:, None].expand_as(keep)[keep]
        base_logits = head_logits(hidden[keep], head)
        delta = slot_adam(base_logits, segment, enc["input_ids"][:, 1:][keep], hidden.shape[0], weight, spec)
        deltas[start : start + len(delta)] = delta.cpu()
    return deltas


def run(strategy: LatentStrategy, ctx: StrategyContext, examples) -> StrategyOutcome:
    cost = {"slot_steps": strategy.slot_steps, "evaluations": 1}
    if examples[0].is_multiple_choice:
        # One delta per distinct context (WinoGrande's choices have their own contexts), fitted
        # on the hidden states of the scoring pass itself.
        result = ctx.evaluate(examples, head_delta=SlotSpec(strategy.slot_steps, strategy.slot_lr))
        return StrategyOutcome(result, None, cost)
    prompts = ctx.prompt_texts(examples)
    deltas = optimise_deltas(ctx.model, ctx.tokenizer, prompts, strategy.slot_steps, strategy.slot_lr)
    outputs = generate_greedy(
        ctx.model,
        ctx.tokenizer,
        prompts,
        ctx.generation.max_new_tokens,
        tuple(stop_sequences(ctx.task, ctx.style)),
        ctx.generation.batch_size,
        head_delta=deltas,
    )
    return StrategyOutcome(generative_result(ctx.task, examples, outputs), None, cost)
