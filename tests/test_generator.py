"""Prompt encoder, hyper-convolutional decoder, generator training and persistence (tiny preset)."""

import json

import pytest
import torch

from coral_env.agents import Generator, GeneratorConfig, HyperConvBlock, HyperConvDecoder, PromptEncoder
from coral_env.backend.lora import AdapterLayout, LoraSpec, attach_lora
from coral_env.backend.models import load_model
from coral_env.setup import ArtifactPaths, CollectionConfig, GeneratorTrainingConfig, collect, pretrain_generator
from coral_env.setup.pretrain_generator import masked_mse, sample_batch

TASKS = ["syn_add", "syn_parity", "syn_compare"]
HOLDOUT = "syn_compare"


@pytest.fixture(scope="module")
def encoder():
    return PromptEncoder(max_length=16)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    model, tok = load_model("tiny", dtype="fp32")
    collect(CollectionConfig.preset("tiny"), TASKS, root, model=model, tokenizer=tok, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(artifacts, encoder):
    config = GeneratorTrainingConfig.preset("tiny")
    losses = []
    gen = pretrain_generator(
        config,
        artifacts,
        TASKS,
        holdout=HOLDOUT,
        encoder=encoder,
        callback=lambda step, loss: losses.append(loss),
        progress=False,
    )
    return gen, losses


def _tiny_layout():
    model, _ = load_model("tiny", dtype="fp32")
    return AdapterLayout.from_model(attach_lora(model, LoraSpec(rank=2, alpha=4)), token_dim=64)


# ----- encoder ------------------------------------------------------------------------------------
def test_encoder_pads_and_truncates(encoder):
    long = " ".join(["word"] * 100)
    out = encoder.token_embeddings(["short one", long, "short one"])
    assert out.shape == (3, 16, encoder.dim) and out.dtype == torch.float32 and encoder.dim == 384
    n_short = int((out[0].abs().sum(-1) > 0).sum())
    assert 2 < n_short < 16  # [CLS] short one [SEP], zero rows after
    assert (out[0, n_short:] == 0).all()
    assert (out[1].abs().sum(-1) > 0).all()  # truncated to L, no padding
    assert torch.equal(out[0], out[2])
    assert encoder.token_embeddings(["short one"], length=4).shape == (1, 4, 384)
    sent = encoder.sentence_embeddings(["short one", long])
    assert sent.shape == (2, 384)
    assert torch.allclose(sent.norm(dim=-1), torch.ones(2), atol=1e-4)


def test_encoder_disk_cache(tmp_path):
    first = PromptEncoder(max_length=8, cache_dir=tmp_path)
    emb = first.token_embeddings(["cache me"])
    assert first.save_cache().exists()
    second = PromptEncoder(max_length=8, cache_dir=tmp_path)
    second.token_embeddings(["cache me"])
    assert ("cache me", 8) in second._tokens and torch.equal(second.token_embeddings(["cache me"]), emb)


# ----- decoder ------------------------------------------------------------------------------------
def test_block_and_decoder_shapes():
    block = HyperConvBlock((4, 16, 32), (8, 8, 12))
    assert block(torch.randn(2, 4, 16, 32)).shape == (2, 8, 8, 12)
    same = HyperConvBlock((4, 8, 12), (4, 8, 12))
    x = torch.randn(2, 4, 8, 12)
    assert same(x).shape == x.shape
    layout = _tiny_layout()
    config = GeneratorConfig.preset("tiny", layout)
    assert config.stages[-1] == (layout.n_layers * layout.tokens_per_layer, 8, 8)
    decoder = HyperConvDecoder(config, layout)
    out = decoder(torch.randn(3, *config.stages[0]))
    assert out.shape == (3, layout.n_layers, layout.tokens_per_layer, layout.token_dim)
    with pytest.raises(ValueError, match="condition has shape"):
        decoder(torch.randn(3, 5, 16, 384))
    with pytest.raises(ValueError, match="h \\* w"):
        GeneratorConfig(stages=[(4, 16, 384), (28, 4, 4)]).for_layout(layout)


def test_paper_preset_matches_papers_token_count():
    # Qwen2.5-0.5B, r=8 on q,k,v,o,gate,up,down, k=1024: the papers' 4296 tokens of 8 x 128.
    names, shapes, layers = [], [], []
    dims = {
        "q": (896, 896),
        "k": (896, 128),
        "v": (896, 128),
        "o": (896, 896),
        "gate": (896, 4864),
        "up": (896, 4864),
        "down": (4864, 896),
    }
    for layer in range(24):
        for mod, (d_in, d_out) in dims.items():
            names += [f"m.layers.{layer}.{mod}.lora_A", f"m.layers.{layer}.{mod}.lora_B"]
            shapes += [(8, d_in), (d_out, 8)]
            layers += [layer, layer]
    config = GeneratorConfig.preset("paper", AdapterLayout(names, shapes, layers, token_dim=1024))
    assert config.stages[0] == (128, 384, 384) and config.stages[-1] == (4296, 8, 128)


def test_cpu_preset_size():
    names, shapes, layers = [], [], []
    for layer in range(30):  # SmolLM2-135M, r=8 on q,k,v,o
        for mod, d_out in (("q", 576), ("k", 192), ("v", 192), ("o", 576)):
            names += [f"m.layers.{layer}.{mod}.lora_A", f"m.layers.{layer}.{mod}.lora_B"]
            shapes += [(8, 576), (d_out, 8)]
            layers += [layer, layer]
    layout = AdapterLayout(names, shapes, layers, token_dim=256)
    decoder = HyperConvDecoder(GeneratorConfig.preset("cpu", layout), layout)
    n = sum(p.numel() for p in decoder.parameters())
    assert 1_000_000 < n < 10_000_000


def test_masked_mse_ignores_padding():
    mask = torch.tensor([[[True, False]]])
    target = torch.zeros(1, 1, 2)
    assert masked_mse(torch.tensor([[[1.0, 100.0]]]), target, mask) == 1.0


# ----- training -----------------------------------------------------------------------------------
def test_generator_loss_decreases(trained):
    gen, losses = trained
    assert len(losses) == GeneratorTrainingConfig.preset("tiny").steps
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert gen.extra["holdout"] == HOLDOUT and HOLDOUT not in gen.extra["tasks"]


def test_sampling_is_deterministic_and_excludes_holdout(artifacts, encoder):
    from coral_env.setup.pretrain_generator import load_training_data

    config = GeneratorTrainingConfig.preset("tiny")
    data = load_training_data(ArtifactPaths(artifacts, "tiny"), TASKS[:2], config, encoder)
    assert data.tasks == TASKS[:2] and set(data.targets) == set(TASKS[:2])
    a = sample_batch(data, 5, 4, 4, seed=0, noise_std=0.1)
    b = sample_batch(data, 5, 4, 4, seed=0, noise_std=0.1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert set(a[2]) <= set(TASKS[:2])


def test_generated_adapter_loads_and_changes_outputs(trained):
    gen, _ = trained
    vector = gen.generate_adapter(["Which number is larger: 3 or 5?", "Which number is larger: 10 or 2?"])
    model, tok = load_model("tiny", dtype="fp32")
    peft = attach_lora(model, LoraSpec(rank=2, alpha=4))
    layout = AdapterLayout.from_model(peft, token_dim=64)
    assert vector.shape == (layout.size,) and vector.dtype == torch.float32
    ids = tok(["Question: Which number is larger: 3 or 5?\nAnswer:"], return_tensors="pt")
    with torch.no_grad():
        base = peft(**ids).logits
        layout.set_flat(vector)
        adapted = peft(**ids).logits
    assert torch.equal(layout.get_flat(), vector)
    assert not torch.allclose(base, adapted)


def test_save_load_round_trip(trained, tmp_path, encoder):
    gen, _ = trained
    prompts = ["What is 2 + 2?", "Is 7 an even number?"]
    gen.save_pretrained(tmp_path / "g")
    loaded = Generator.from_pretrained(tmp_path / "g", encoder=encoder)
    assert torch.equal(loaded.generate_adapter(prompts), gen.generate_adapter(prompts))
    assert torch.equal(loaded.layout.mean, gen.layout.mean) and loaded.layout.names == gen.layout.names
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    assert cfg["format"] == "coral-generator" and cfg["generator"]["stages"][-1] == list(gen.config.stages[-1])
    fresh = Generator.from_pretrained(tmp_path / "g")  # its own encoder instance
    assert torch.allclose(fresh.generate_adapter(prompts), gen.generate_adapter(prompts), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="not a generator folder"):
        Generator.from_pretrained(tmp_path / "nothing")


def test_prompt_selection(trained):
    gen, _ = trained
    n = gen.config.num_prompts
    assert gen.select_prompts(["a", "b"]) == (["a", "b"] * n)[:n]
    assert torch.equal(gen.generate_adapter(["a", "b"]), gen.generate_adapter(["a", "b"] * n))
    with pytest.raises(ValueError, match="at least one prompt"):
        gen.generate_adapter([])


def test_pretraining_resume_is_identical(artifacts, encoder, trained, tmp_path):
    import shutil

    # Same run, interrupted at step 15 and resumed, in a copy of the artifacts.
    copy = tmp_path / "copy"
    shutil.copytree(artifacts, copy)
    shutil.rmtree(ArtifactPaths(copy, "tiny").generator_dir(HOLDOUT), ignore_errors=True)
    config = GeneratorTrainingConfig.preset("tiny")

    def killer(step, loss):
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain_generator(config, copy, TASKS, holdout=HOLDOUT, encoder=encoder, callback=killer, progress=False)
    resumed = pretrain_generator(config, copy, TASKS, holdout=HOLDOUT, encoder=encoder, progress=False)
    original, _ = trained
    for (name, a), b in zip(original.decoder.state_dict().items(), resumed.decoder.state_dict().values()):
        assert torch.equal(a, b), name
    # A finished generator is loaded, not retrained.
    again = pretrain_generator(
        config,
        copy,
        TASKS,
        holdout=HOLDOUT,
        encoder=encoder,
        callback=lambda s, l: pytest.fail("retrained"),
        progress=False,
    )
    assert torch.equal(again.generate_adapter(["x"]), resumed.generate_adapter(["x"]))


@pytest.mark.parametrize("anchor", ["none", "init"])
def test_other_anchors_train_and_round_trip(artifacts, encoder, tmp_path, anchor):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(artifacts, copy)
    shutil.rmtree(ArtifactPaths(copy, "tiny").generator_dir(HOLDOUT), ignore_errors=True)
    config = GeneratorTrainingConfig.preset("tiny", anchor=anchor, steps=5)
    gen = pretrain_generator(config, copy, TASKS, holdout=HOLDOUT, encoder=encoder, progress=False)
    assert (gen.anchor is None) == (anchor == "none")
    gen.save_pretrained(tmp_path / "g")
    loaded = Generator.from_pretrained(tmp_path / "g", encoder=encoder)
    assert torch.equal(loaded.generate_adapter(["What is 1 + 1?"]), gen.generate_adapter(["What is 1 + 1?"]))
