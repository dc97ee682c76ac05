"""Model backend: loading errors, LoRA layout round trips, in-place adapters, packed scoring."""

import json

import numpy as np
import pytest
import torch

from coral_env.backend.lora import AdapterLayout, LoraSpec, adapter_hash, load_adapter, save_adapter, state_for_layout
from coral_env.backend.metrics import auc, balanced_accuracy, wilson_ci
from coral_env.backend.models import ModelNotFoundError, load_model, resolve_dtype
from coral_env.backend.packing import Group, pack_rows
from coral_env.backend.scoring import ScoringConfig, encode_pairs, input_nll, score_continuations


def test_bad_model_names_say_what_is_wrong(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a model folder or .gguf"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ModelNotFoundError, match="GGUF file .* does not exist"):
        load_model(str(tmp_path / "x.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError, match="offline name .*smollm2-135m-instruct"):
        load_model("no-such-org/no-such-model")


def test_dtype_resolution():
    assert resolve_dtype("fp32") is torch.float32
    assert resolve_dtype("auto") in (torch.bfloat16, torch.float32)
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3")


def test_lora_rank_must_split_in_halves():
    with pytest.raises(ValueError, match="even"):
        LoraSpec(rank=3)


def test_layout_flat_and_token_round_trip(tiny_lora):
    model, _, layout = tiny_lora
    assert layout.size == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    vec = torch.randn(layout.size)
    tokens = layout.tokenize(vec)
    assert tokens.shape == (layout.n_layers, layout.tokens_per_layer, layout.token_dim)
    assert torch.equal(layout.detokenize(tokens), vec)
    assert not tokens[~layout.mask()].any()  # padding is zero
    # Batched vectors and fitted scales round-trip too.
    stack = torch.randn(4, layout.size) * 0.1 + 0.3
    layout.fit_scales(stack)
    back = layout.detokenize(layout.tokenize(stack))
    assert torch.allclose(back, stack, atol=1e-6)
    normed = layout.tokenize(stack)[:, layout.mask()]
    assert abs(float(normed.mean())) < 1e-4 and abs(float(normed.std()) - 1) < 0.05
    assert layout.positions(16).shape == (layout.n_layers, layout.tokens_per_layer, 16)


def test_set_flat_in_place_changes_outputs_and_restores(tiny_lora):
    model, tok, layout = tiny_lora
    ids = tok("Question: what is two plus two?\nAnswer:", return_tensors="pt")["input_ids"]
    base = model(ids).logits.detach()
    snapshot = layout.get_flat()
    params_before = {n: id(p) for n, p in model.named_parameters()}
    layout.set_flat(torch.randn(layout.size) * 0.5)
    changed = model(ids).logits.detach()
    assert not torch.allclose(base, changed)
    assert {n: id(p) for n, p in model.named_parameters()} == params_before  # no re-wrapping
    layout.set_flat(snapshot)
    assert torch.equal(model(ids).logits.detach(), base)
    assert adapter_hash(layout.get_flat()) == adapter_hash(snapshot)
    with pytest.raises(ValueError, match="expected"):
        layout.set_flat(torch.zeros(3))


def test_adapter_save_load_round_trip(tiny_lora, tmp_path):
    model, _, layout = tiny_lora
    vec = torch.randn(layout.size)
    save_adapter(tmp_path / "ad", layout, vec, LoraSpec(rank=2, alpha=4), "tiny")
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and cfg["peft_type"] == "LORA"
    loaded = load_adapter(tmp_path / "ad")
    assert torch.equal(state_for_layout(layout, loaded.state), vec)
    saved_layout = tmp_path / "layout"
    layout.save(saved_layout)
    again = AdapterLayout.load(saved_layout)
    assert again.size == layout.size and torch.equal(again.mean, layout.mean)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(tmp_path)


def test_encode_pairs_matches_lm_eval_split(tiny):
    _, tok = tiny
    ((ctx, cont),) = encode_pairs(tok, [("Question: Is it?\nAnswer: ", "yes")])
    # The trailing space moves into the continuation, as lm-evaluation-harness does.
    assert tok.decode(ctx).endswith("Answer:") and tok.decode(cont) == " yes"


def _naive_scores(model, tok, requests):
    out = []
    for reqs in requests:
        row = []
        for ctx, cont in encode_pairs(tok, reqs):
            ids = torch.tensor([ctx + cont[:-1]])
            lp = torch.log_softmax(model(ids).logits[0].float(), -1)
            row.append(sum(float(lp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)))
        out.append(torch.tensor(row))
    return out


@torch.no_grad()
@pytest.mark.parametrize("row_len,rows_per_call", [(256, 4), (16, 1), (64, 3)])
def test_packed_scoring_equals_one_row_per_choice(tiny, row_len, rows_per_call):
    model, tok = tiny
    requests = [
        [("Question: What colour is the sky?\nAnswer:", c) for c in (" blue", " green", " a deep red")],
        [("Question: 2+2?\nAnswer:", c) for c in (" 4", " five")],
        [("The cat sat on the", " mat."), ("The dog sat on the", " mat.")],  # per-choice contexts
        [("", " hello world")],
    ]
    packed = score_continuations(model, tok, requests, ScoringConfig(row_len, rows_per_call))
    naive = _naive_scores(model, tok, requests)
    for p, n in zip(packed, naive):
        assert p.shape == n.shape
        assert torch.allclose(p, n, atol=1e-4), (p, n)


def test_pack_rows_first_fit():
    groups = [Group([1] * n, [[2]], [(i, 0)]) for i, n in enumerate([200, 100, 50, 300, 40])]
    rows = pack_rows(groups, 256)
    assert sorted(i for r in rows for i in r) == list(range(5))
    for r in rows:
        assert len(r) == 1 or sum(groups[i].length for i in r) <= 256


def test_input_nll_per_sample(tiny):
    model, tok = tiny
    texts = ["a b c d e f", "the quick brown fox jumps over the lazy dog"]
    batched = input_nll(model, tok, texts, batch_size=2)
    single = torch.cat([input_nll(model, tok, [t]) for t in texts])
    assert batched.shape == (2,) and torch.allclose(batched, single, atol=1e-4)


def test_metrics():
    assert wilson_ci(0, 0) == (0.0, 0.0)
    lo, hi = wilson_ci(50, 100)
    assert lo < 0.5 < hi and abs((lo + hi) / 2 - 0.5) < 1e-9
    labels = np.array([1, 1, 1, 0])
    assert balanced_accuracy(labels, np.array([1, 1, 1, 1])) == 0.5  # the prior alone buys nothing
    assert auc(labels.astype(bool), np.array([0.9, 0.8, 0.7, 0.1])) == 1.0
    assert auc(labels.astype(bool), np.array([1, 1, 1, 1])) == 0.5
    assert auc(np.array([True, True]), np.array([0.1, 0.2])) is None


def _block_mask(batch: int, length: int, block: int) -> torch.Tensor:
    mask = torch.zeros(batch, 1, length, length, dtype=torch.bool)
    for b in range(batch):
        for at in range(0, length, block):
            n = min(block, length - at)
            mask[b, 0, at : at + n, at : at + n] = torch.ones(n, n, dtype=torch.bool).tril()
    return mask


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_packed_attention_equals_sdpa_with_grouped_heads(dtype, atol):
    from types import SimpleNamespace

    from coral_env.backend.attention import packed_attention_forward

    torch.manual_seed(0)
    q = torch.randn(3, 6, 20, 8).to(dtype)  # 6 query heads share 2 key/value heads
    k, v = torch.randn(3, 2, 20, 8).to(dtype), torch.randn(3, 2, 20, 8).to(dtype)
    mask = _block_mask(3, 20, 7)
    module = SimpleNamespace(is_causal=True, training=False, num_key_value_groups=3)
    with torch.no_grad():
        out, weights = packed_attention_forward(module, q, k, v, mask, scaling=0.3)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=mask, scale=0.3, enable_gqa=True
    ).transpose(1, 2)
    assert weights is None and out.shape == (3, 20, 6, 8) and out.dtype == dtype
    assert torch.allclose(out.float(), ref, atol=atol)


def test_packed_attention_is_scoped_and_used_by_scoring(tiny, monkeypatch):
    from coral_env.backend import attention

    model, tok = tiny
    calls = []
    real = attention.packed_attention_forward
    monkeypatch.setattr(attention, "packed_attention_forward", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    before = model.config._attn_implementation
    score_continuations(model, tok, [[("Question: 2+2?\nAnswer:", " 4")]])
    assert calls and model.config._attn_implementation == before == "sdpa"
    with pytest.raises(RuntimeError), attention.packed_attention(model):
        assert model.config._attn_implementation == attention.NAME
        raise RuntimeError
    assert model.config._attn_implementation == "sdpa"


_MALLOC_PROBE = """
import ctypes, ctypes.util, json
from coral_env.allocator import tune_allocator

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def probe(size):
    # bytes glibc mmapped for one block of `size`, and the heap still mapped after freeing it
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    mmapped = libc.mallinfo2().hblkhd - before
    libc.free(block)
    return mmapped, libc.mallinfo2().arena

out = {"default": probe(16 << 20), "first": tune_allocator()}
# 24 MB: above the 16 MB to which glibc's own sliding threshold has risen after the free above
out["tuned"], out["second"] = probe(24 << 20), tune_allocator()
print(json.dumps(out))
"""


def _malloc_probe(env_tuning: str) -> dict:
    import os
    import subprocess
    import sys

    env = {**os.environ, "CORAL_MALLOC_TUNING": env_tuning}
    proc = subprocess.run([sys.executable, "-c", _MALLOC_PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


def test_tune_allocator_serves_blocks_from_the_heap_and_is_idempotent():
    """In a fresh process a 16 MB block is mmapped (and unmapped on free) by default; after
    tuning a 24 MB one comes from the heap, which stays mapped after the free. A second call keeps the
    settings and reports the same; CORAL_MALLOC_TUNING=0 leaves malloc alone."""
    import ctypes
    import ctypes.util
    import sys

    libc_name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(libc_name or "libc.so.6"), "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    out = _malloc_probe("1")
    assert out["default"][0] >= 16 << 20  # glibc's default: a block this size is its own mapping
    assert (out["first"], out["second"]) == (True, True)
    mmapped, heap_after_free = out["tuned"]
    assert mmapped == 0 and heap_after_free >= 24 << 20  # from the heap, and kept after free()
    off = _malloc_probe("0")
    assert (off["first"], off["second"]) == (False, False) and off["tuned"][0] >= 24 << 20


_RELEASE_PROBE = """
import ctypes, ctypes.util, json
from coral_env.allocator import release_free_memory, tune_allocator

tune_allocator()  # freed heap blocks now stay mapped (the trim threshold is 256 MB)
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(1 << 20) for _ in range(200)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)  # touched: resident
for b in blocks[:-1]:  # the last block keeps the heap top in use: only a full trim releases the rest
    libc.free(b)
print(json.dumps({"released": release_free_memory(), "again": release_free_memory()}))
"""


def test_release_free_memory_returns_the_freed_heap_to_the_kernel():
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    proc = subprocess.run([sys.executable, "-c", _RELEASE_PROBE], capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout)
    assert out["released"] > 150 << 20  # most of the 199 MB freed below a live block
    assert out["again"] < 8 << 20  # nothing left to release


@torch.no_grad()
def test_chunked_output_layer_matches_one_block(tiny, monkeypatch):
    from coral_env.backend import scoring
    from coral_env.backend.scoring import SlotSpec

    model, tok = tiny
    requests = [
        [("Question: What colour is the sky?\nAnswer:", c) for c in (" blue", " green", " red")],
        [("The cat sat on the", " mat."), ("The dog sat on the", " mat.")],
    ]
    whole = [score_continuations(model, tok, requests, head_delta=spec) for spec in (None, SlotSpec(2, 0.1))]
    monkeypatch.setattr(scoring, "CHUNK_ROWS", 2)  # several blocks per call, SLOT offsets indexed per block
    chunked = [score_continuations(model, tok, requests, head_delta=spec) for spec in (None, SlotSpec(2, 0.1))]
    for a, b in zip(whole, chunked):
        for x, y in zip(a, b):
            assert torch.allclose(x, y, atol=1e-5)
    assert not torch.allclose(whole[0][0], whole[1][0], atol=1e-4)  # SLOT moved the scores
