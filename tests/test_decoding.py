"""Continuous-batching greedy decoding against a cache-free greedy loop, one prompt at a time."""

import pytest
import torch

from coral_env.backend.decoding import cut_at_stop, generate_greedy

PROMPTS = [
    "x = y + z",
    "Once upon a time",
    "Hello world, this is a longer prompt with more tokens in it",
    "red green blue yellow",
    "Q: 9 * 9\nA:",
    "Two words",
    "def f(x):",
    "Numbers: 1, 2, 3,",
]
STOP = ("k", "w", "x")  # ends the rows at steps 4, 12, 2, 6, 12, 5, 7, 12 of 12: refills at varied times


def reference(model, tok, prompt: str, max_new: int, stop=STOP, delta=None) -> tuple[str, int]:
    """Greedy decoding by recomputing the whole sequence at every step: no cache, no padding.
    Returns the text and the number of tokens decoded."""
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(input_ids=torch.cat([ids, torch.tensor([new], dtype=torch.long)], 1)).logits[0, -1].float()
            if delta is not None:
                logits = logits + delta.float() @ model.lm_head.weight.float().T
            new.append(int(logits.argmax()))
            text = tok.decode(new, skip_special_tokens=True)
            if new[-1] == tok.eos_token_id or any(s in text for s in stop):
                break
    return cut_at_stop(tok.decode(new, skip_special_tokens=True), stop), len(new)


@pytest.fixture(scope="module")
def model_tok(tiny):
    """A random 2-layer Qwen2 whose text depends on positions and context. (The tiny preset's model,
    with tied embeddings and small weights, repeats the last token whatever the cache holds.)"""
    from coral_env.backend.models import tiny_model

    tok = tiny[1]
    return tiny_model(tok, tie_word_embeddings=False, initializer_range=0.1).eval(), tok


def test_continuous_batching_gives_each_prompt_its_own_greedy_text(model_tok):
    model, tok = model_tok
    expected, steps = zip(*[reference(model, tok, p, 12) for p in PROMPTS])
    assert len(set(steps)) > 2, f"the rows must stop at different steps to exercise refills: {steps}"
    for batch_size in (1, 3, 8):
        assert generate_greedy(model, tok, PROMPTS, 12, STOP, batch_size) == list(expected), batch_size


def test_slot_offsets_follow_their_row_through_refills(model_tok):
    model, tok = model_tok
    delta = torch.randn(len(PROMPTS), model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    stop = ("w",)  # ends the offset rows at steps 8, 10, 10, 5, 10, 1, 1, 10 of 10
    expected, steps = zip(*[reference(model, tok, p, 10, stop, delta[i]) for i, p in enumerate(PROMPTS)])
    assert len(set(steps)) > 2, f"the rows must stop at different steps to exercise refills: {steps}"
    assert expected != tuple(reference(model, tok, p, 10, stop)[0] for p in PROMPTS)  # the offsets change the texts
    assert generate_greedy(model, tok, PROMPTS, 10, stop, 3, head_delta=delta) == list(expected)


def test_finished_rows_are_replaced_while_prompts_remain(model_tok):
    """Every decoding step runs a full batch until the queue is empty, then the batch only shrinks."""
    model, tok = model_tok
    sizes: list[int] = []
    widths: list[int] = []

    def record_decoding_steps(_, args, kwargs):
        if kwargs["input_ids"].shape[1] == 1:  # one new token per row (prefills are longer)
            sizes.append(kwargs["input_ids"].shape[0])
            widths.append(kwargs["attention_mask"].shape[1])

    hook = model.register_forward_pre_hook(record_decoding_steps, with_kwargs=True)
    try:
        generate_greedy(model, tok, PROMPTS * 2, 12, STOP, 3)
    finally:
        hook.remove()
    assert sizes, "no decoding step ran"
    first_short = next((i for i, s in enumerate(sizes) if s < 3), len(sizes))
    tail = sizes[first_short:]
    assert all(a >= b for a, b in zip(tail, tail[1:])), f"a row waited for its batch to finish: {sizes}"
    # The last full step leaves at most batch_size - 1 rows to finish alone.
    assert len(tail) <= 12 * 2, sizes
    # Columns no row uses any more are dropped: the cache never outgrows one prompt plus its answer.
    longest = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS)
    assert max(widths) <= longest + 12, (longest, widths)


def test_bad_limits_are_refused(model_tok):
    model, tok = model_tok
    with pytest.raises(ValueError, match="batch_size and max_new_tokens must be >= 1"):
        generate_greedy(model, tok, PROMPTS, 0, STOP, 3)
