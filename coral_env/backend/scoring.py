"""Model-level scoring: choice log-likelihoods, greedy generation, per-sample input perplexity.

Works on a plain HF causal LM or a PEFT-wrapped one (LoRA layers live inside the decoder, so
calling the decoder directly still applies them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .attention import packed_attention
from .packing import Group, build_batch, pack_rows

HeadDelta = Callable[[torch.Tensor], torch.Tensor]
"""owner (K,) flat request index -> (K, hidden) fp32 vectors added to the final hidden states
before the output layer (SLOT). Applied as fp32 logits + delta @ W^T (the product in the
model's dtype), so a small delta is not rounded away by a bf16 hidden state."""


@dataclass(frozen=True)
class SlotSpec:
    """SLOT inside the scoring pass: one delta per distinct context, ``steps`` Adam steps at ``lr``
    on the context's own next-token loss, fitted on the hidden states of the same decoder pass
    that scores the choices (the delta only touches the output layer, so nothing is recomputed)."""

    steps: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass
class ScoringConfig:
    """Packing shape of log-likelihood scoring.

    With PyTorch's SDPA, 4 rows x 256 tokens per call was the fastest shape measured. With the packed
    attention (attention.py) attention cost grows with the row length while the matmuls only see
    rows x length, so 16 rows x 64 tokens was faster on the cpu preset (benchmarks/eval.md).
    """

    row_len: int = 64
    rows_per_call: int = 16
    progress: bool = False


def decoder_and_head(model):
    """(decoder returning hidden states, output projection) of a causal LM, PEFT or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def encode_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """Tokenise (context, continuation) pairs exactly like lm-evaluation-harness.

    Trailing spaces of the context move into the continuation; the continuation's tokens are
    ``encode(context + continuation)[len(encode(context)):]``; no special tokens; an empty
    context is replaced by the end-of-text token.
    """
    contexts, wholes = [], []
    for context, continuation in pairs:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        contexts.append(context)
        wholes.append(context + continuation)
    enc = tokenizer(contexts + wholes, add_special_tokens=False)["input_ids"]
    ctx_ids, whole_ids = enc[: len(pairs)], enc[len(pairs) :]
    out = []
    for ctx, whole in zip(ctx_ids, whole_ids):
        cont = whole[len(ctx) :]
        if not ctx:
            ctx = [tokenizer.eos_token_id]
        if not cont:
            raise ValueError("a continuation encodes to zero tokens; choices must be non-empty")
        out.append((list(ctx), list(cont)))
    return out


def make_groups(encoded: list[tuple[list[int], list[int]]], keys: list[tuple[int, int]], max_len: int) -> list[Group]:
    """Group requests that share identical context tokens; contexts are cut from the left to fit."""
    by_context: dict[tuple[int, ...], Group] = {}
    for (ctx, cont), key in zip(encoded, keys):
        cont = cont[-max_len:]
        room = max_len - len(cont) + 1
        ctx = ctx[-room:] if room > 0 else ctx[-1:]
        group = by_context.get(tuple(ctx))
        if group is None:
            group = by_context[tuple(ctx)] = Group(list(ctx), [], [])
        group.continuations.append(cont)
        group.keys.append(key)
    return list(by_context.values())


@torch.no_grad()
def score_continuations(
    model,
    tokenizer,
    requests: list[list[tuple[str, str]]],
    config: ScoringConfig | None = None,
    head_delta: HeadDelta | SlotSpec | None = None,
) -> list[torch.Tensor]:
    """Summed log-probability of each continuation given its context.

    Args:
        requests: per question, a list of (context, continuation) pairs (one per choice).
        head_delta: optional per-request vectors added to the final hidden states at the scored
            positions (SLOT's per-sample delta), or a ``SlotSpec`` to fit one delta per context
            inside this pass.
    Returns:
        per question, a float32 tensor (n_choices,) of summed log-probabilities.
    """
    from tqdm.auto import tqdm

    config = config or ScoringConfig()
    keys = [(q, c) for q, reqs in enumerate(requests) for c in range(len(reqs))]
    key_index = {k: i for i, k in enumerate(keys)}
    encoded = encode_pairs(tokenizer, [pair for reqs in requests for pair in reqs])
    max_len = getattr(model.config, "max_position_embeddings", 2048)
    groups = make_groups(encoded, keys, max_len)
    rows = pack_rows(groups, config.row_len)
    rows.sort(key=lambda r: -sum(groups[g].length for g in r))
    decoder, head = decoder_and_head(model)
    device = head.weight.device
    totals = torch.zeros(len(keys), dtype=torch.float64)
    weight = head.weight  # (V, hidden), the model's dtype
    calls = [rows[i : i + config.rows_per_call] for i in range(0, len(rows), config.rows_per_call)]
    workspace = None
    if isinstance(head_delta, SlotSpec) and head_delta.steps > 0:
        # SLOT's (context positions x vocab) matrix, sized once for the largest call.
        most = max(sum(len(groups[g].context) - 1 for row in call for g in row) for call in calls)
        workspace = torch.empty(most, weight.shape[0], device=device)
    with packed_attention(model):
        for call in tqdm(calls, desc="scoring", disable=not config.progress, leave=False):
            batch = build_batch(groups, call, key_index, tokenizer.pad_token_id)
            hidden = decoder(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                position_ids=batch.position_ids.to(device),
            ).last_hidden_state
            picked = hidden[batch.gather_rows.to(device), batch.gather_cols.to(device)]
            offsets = index = None
            if isinstance(head_delta, SlotSpec):  # one offset row per group, (segments, V)
                deltas = fit_slot_deltas(hidden, batch, head, head_delta, workspace)
                offsets, index = vocab_offsets(deltas, weight), batch.segment.to(device)
            elif head_delta is not None:
                offsets = vocab_offsets(head_delta(batch.owner).to(device), weight)
            chosen = target_logprobs(picked, head, batch.targets.to(device), offsets, index)
            totals.index_add_(0, batch.owner, chosen.double().cpu())
    out, i = [], 0
    for reqs in requests:
        out.append(totals[i : i + len(reqs)].float())
        i += len(reqs)
    return out


def slot_adam(
    base_logits: torch.Tensor,
    segment: torch.Tensor,
    targets: torch.Tensor,
    n_segments: int,
    weight: torch.Tensor,
    spec: SlotSpec,
) -> torch.Tensor:
    """Closed-form Adam on one delta per segment: loss = mean NLL of the segment's positions.

    ``base_logits`` (P, V) fp32 are the logits H W^T of the positions (overwritten: this
    function owns them). With delta the logits are base + delta W^T, so the gradient is
    W^T (sum_i softmax_i - onehot_i) / n_segment. The softmax is never recomputed: with
    E_i = exp(base_i - max) (computed once) and u = exp(delta W^T - max),
    softmax_i = E_i * u / (E_i . u), so a segment's summed probabilities are
    u * E_s^T (1 / (E_s u)): two matrix-vector products over E per step instead of
    rebuilding, normalising and summing a (P, V) tensor. The two products with the head
    ``weight`` (V, hidden) per step run in its dtype (``vocab_offsets``).
    Returns (n_segments, hidden) fp32; a segment without positions keeps delta 0.
    """
    device = base_logits.device
    vocab, hidden_size = weight.shape
    delta = torch.zeros(n_segments, hidden_size, device=device)
    if spec.steps == 0 or base_logits.shape[0] == 0:
        return delta
    if segment.numel() > 1 and bool((segment[1:] < segment[:-1]).any()):
        order = torch.argsort(segment, stable=True)
        base_logits, segment, targets = base_logits[order], segment[order], targets[order]
    counts = torch.bincount(segment, minlength=n_segments)
    bounds = [0] + torch.cumsum(counts, 0).tolist()
    onehot_sum = torch.zeros(n_segments, vocab, device=device)
    onehot_sum.index_put_((segment, targets), torch.ones(len(segment), device=device), accumulate=True)
    exp_base = base_logits.sub_(base_logits.max(dim=1, keepdim=True).values).exp_()
    denom = counts.clamp(min=1).to(torch.float32)[:, None]
    m, v = torch.zeros_like(delta), torch.zeros_like(delta)
    b1, b2 = spec.betas
    probs_sum = torch.zeros(n_segments, vocab, device=device)
    for t in range(1, spec.steps + 1):
        if t == 1:  # delta = 0
            u = torch.ones(n_segments, vocab, device=device)
        else:
            offsets = vocab_offsets(delta, weight)
            u = offsets.sub_(offsets.max(dim=1, keepdim=True).values).exp_()  # (S, V)
        for s in range(n_segments):
            lo, hi = bounds[s], bounds[s + 1]
            if hi == lo:
                continue
            block = exp_base[lo:hi]
            probs_sum[s] = torch.mv(block.T, torch.mv(block, u[s]).reciprocal_()).mul_(u[s])
        grad = ((probs_sum - onehot_sum).to(weight.dtype) @ weight).float() / denom
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        delta -= spec.lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + spec.eps)
    return delta


def fit_slot_deltas(
    hidden: torch.Tensor, batch, head, spec: SlotSpec, workspace: torch.Tensor | None = None
) -> torch.Tensor:
    """One SLOT delta per group of a packed batch, from that batch's decoder hidden states.

    ``workspace``: an fp32 (>= context positions, vocab) buffer to hold the base logits, reused
    across calls (a fresh matrix this size costs more in page faults than in arithmetic here).
    """
    device = hidden.device
    if batch.ctx_rows.numel() == 0 or spec.steps == 0:
        return torch.zeros(batch.n_segments, head.weight.shape[1], device=device)
    ctx_hidden = hidden[batch.ctx_rows.to(device), batch.ctx_cols.to(device)]
    base_logits = head_logits(ctx_hidden, head, workspace)
    return slot_adam(
        base_logits, batch.ctx_segment.to(device), batch.ctx_targets.to(device), batch.n_segments, head.weight, spec
    )


def vocab_offsets(delta: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """fp32 (n, V) = delta (n, hidden) @ W^T, multiplied in W's dtype: W^T is read once per call,
    and reading a bf16 head costs half of an fp32 copy (on the cpu preset these products were
    most of SLOT's optimisation time in fp32). The rounding is relative to delta W^T itself."""
    return (delta.to(weight.dtype) @ weight.T).float()


CHUNK_ROWS = 128
"""Rows of (rows, vocab) logits handled at once. A (128, 49k) fp32 block is 25 MB, under glibc's
32 MB mmap threshold, so freed blocks are reused from the heap; whole (K, vocab) matrices came
back as fresh pages at every call, and faulting them in cost more than the arithmetic on this
machine (a log-softmax into a fresh 118 MB tensor: 35 ms; into a reused one: 8 ms)."""


def head_logits(x: torch.Tensor, head, out: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 (n, vocab) logits of hidden states ``x`` (n, hidden), block by block into ``out``
    (its first n rows; allocated when None)."""
    n = x.shape[0]
    vocab = head.weight.shape[0]
    out = torch.empty(n, vocab, device=x.device) if out is None else out[:n]
    for lo in range(0, n, CHUNK_ROWS):
        out[lo : lo + CHUNK_ROWS] = head(x[lo : lo + CHUNK_ROWS])
    return out


def target_logprobs(
    x: torch.Tensor, head, targets: torch.Tensor, offsets: torch.Tensor | None = None, index: torch.Tensor | None = None
) -> torch.Tensor:
    """log p(targets[i] | x[i]) in fp32, (n,). ``offsets`` (m, vocab) fp32 are added to the logits:
    row ``index[i]`` to row i, or row i when ``index`` is None."""
    chosen = torch.empty(x.shape[0], device=x.device)
    for lo in range(0, x.shape[0], CHUNK_ROWS):
        hi = lo + CHUNK_ROWS
        logits = head(x[lo:hi]).float()
        if offsets is not None:
            logits += offsets[lo:hi] if index is None else offsets[index[lo:hi]]
        chosen[lo:hi] = torch.log_softmax(logits, dim=-1).gather(1, targets[lo:hi, None])[:, 0]
    return chosen


def input_nll(
    model, tokenizer, texts: list[str], batch_size: int = 8, max_len: int = 512, grad: bool = False
) -> torch.Tensor:
    """Mean next-token negative log-likelihood of each text (its log-perplexity), shape (n,).

    With ``grad=True`` the result keeps the autograd graph (TTL minimises it).
    """
    with torch.set_grad_enabled(grad):
        values = []
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_len,
                add_special_tokens=False,
            )
            enc = enc.to(decoder_and_head(model)[1].weight.device)
            logits = model(**enc).logits[:, :-1].float()
            target = enc["input_ids"][:, 1:]
            keep = enc["attention_mask"][:, 1:].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            values.append((nll * keep).sum(1) / keep.sum(1).clamp(min=1))
        return torch.cat(values)
