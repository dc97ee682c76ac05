"""Checkpoint collection and supervised fine-tuning (tiny preset, synthetic tasks, no network)."""

import argparse
import json

import pytest
import torch

from coral_env.backend.finetune import (
    IGNORE,
    adamw_state,
    batch_indices,
    build_sequences,
    collate,
    load_adamw_state,
    make_optimizer,
    train_lora,
    train_step,
)
from coral_env.backend.models import load_model
from coral_env.setup import ArtifactPaths, CollectionConfig, MissingArtifactError, collect
from coral_env.tasks import load_task

TASKS = ["syn_add", "syn_parity"]


def _fresh():
    return load_model("tiny", dtype="fp32")


class Kill(RuntimeError):
    pass


# ----- finetune pieces -------------------------------------------------------------------------
def test_sequences_mask_prompt_tokens(tiny):
    _, tok = tiny
    splits = load_task("syn_add")
    ex = splits.train[0]
    seq = build_sequences([ex], tok, max_len=64)[0]
    n_ans = seq.n_answer_tokens
    assert n_ans >= 1 and all(t == IGNORE for t in seq.labels[:-n_ans])
    assert list(seq.labels[-n_ans:]) == list(seq.input_ids[-n_ans:])
    assert tok.decode(seq.input_ids[-n_ans:]).strip() == ex.answer
    # Truncation keeps the answer and cuts the prompt from the left.
    short = build_sequences([ex], tok, max_len=n_ans + 2)[0]
    assert short.input_ids == seq.input_ids[-(n_ans + 2) :] and short.labels[:2] == (IGNORE, IGNORE)
    gen = build_sequences(load_task("syn_sum").train[:1], tok)[0]
    assert tok.decode(gen.input_ids[-gen.n_answer_tokens :]).strip() == load_task("syn_sum").train[0].answer


def test_batch_indices_deterministic_epochs():
    a = [batch_indices(10, 4, t, seed=3) for t in range(5)]
    assert a == [batch_indices(10, 4, t, seed=3) for t in range(5)]
    flat = sum(a, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert a != [batch_indices(10, 4, t, seed=4) for t in range(5)]


def test_collate_pads_right(tiny):
    _, tok = tiny
    seqs = build_sequences(load_task("syn_add").train[:3], tok)
    batch = collate(seqs, tok.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert int(batch["attention_mask"].sum()) == sum(len(s.input_ids) for s in seqs)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


def test_train_lora_lowers_loss_and_touches_only_lora():
    from coral_env.backend.lora import AdapterLayout, LoraSpec, attach_lora

    model, tok = _fresh()
    peft = attach_lora(model, LoraSpec(rank=2, alpha=4))
    base = {n: p.detach().clone() for n, p in peft.named_parameters() if "lora_" not in n}
    losses = train_lora(peft, tok, load_task("syn_parity").train[:32], steps=30, lr=1e-2, batch_size=8)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert all(torch.equal(p, base[n]) for n, p in peft.named_parameters() if "lora_" not in n)
    assert AdapterLayout.from_model(peft, 64).get_flat().abs().sum() > 0


def test_adamw_state_round_trip():
    from coral_env.backend.lora import AdapterLayout, LoraSpec, attach_lora

    model, tok = _fresh()
    peft = attach_lora(model, LoraSpec(rank=2, alpha=4))
    layout = AdapterLayout.from_model(peft, 64)
    params = layout._bound()
    opt = make_optimizer(params, 1e-3)
    assert float(adamw_state(opt, params)["step"][0]) == 0
    batch = collate(build_sequences(load_task("syn_add").train[:4], tok), tok.pad_token_id)
    train_step(peft, batch, opt)
    saved = adamw_state(opt, params)
    opt2 = make_optimizer(params, 1e-3)
    load_adamw_state(opt2, params, saved)
    again = adamw_state(opt2, params)
    assert all(torch.equal(saved[k], again[k]) for k in saved)


# ----- collection --------------------------------------------------------------------------------
def _checkpoints(root, task):
    paths = ArtifactPaths(root, "tiny")
    return paths.load_checkpoints(task)


def test_collection_resume_is_bit_identical(tmp_path):
    config = CollectionConfig.preset("tiny")
    model, tok = _fresh()
    full = collect(config, TASKS, tmp_path / "full", model=model, tokenizer=tok, progress=False)
    assert [r.steps for r in full] == [config.total_steps] * 2

    def killer(task, step, loss):
        if task == TASKS[1] and step == 3:
            raise Kill("simulated kill")

    model, tok = _fresh()
    with pytest.raises(Kill):
        collect(config, TASKS, tmp_path / "cut", model=model, tokenizer=tok, callback=killer, progress=False)
    paths = ArtifactPaths(tmp_path / "cut", "tiny")
    assert paths.is_collected(TASKS[0]) and not paths.is_collected(TASKS[1])
    model, tok = _fresh()  # a new "process": fresh model, LoRA re-attached
    resumed = collect(config, TASKS, tmp_path / "cut", model=model, tokenizer=tok, progress=False)
    assert resumed[0].skipped and resumed[1].resumed_from == 3
    for task in TASKS:
        a, meta_a = _checkpoints(tmp_path / "full", task)
        b, meta_b = _checkpoints(tmp_path / "cut", task)
        assert a.shape == (config.total_steps, b.shape[1])
        assert torch.equal(a, b), task
        assert meta_a == meta_b
    # Every step of both phases is saved, with its schedule in the metadata.
    _, meta = _checkpoints(tmp_path / "full", TASKS[0])
    assert [m["step"] for m in meta] == list(range(1, config.total_steps + 1))
    assert [m["phase"] for m in meta] == [1] * config.phase1_steps + [2] * config.phase2_steps
    assert {m["lr"] for m in meta} == {config.phase1_lr, config.phase2_lr}
    phase2, _ = ArtifactPaths(tmp_path / "full", "tiny").load_checkpoints(TASKS[0], phases=(2,))
    assert phase2.shape[0] == config.phase2_steps
    # Tasks share one initialisation (comparable coordinates) but not their trajectories.
    a0, _ = _checkpoints(tmp_path / "full", TASKS[0])
    a1, _ = _checkpoints(tmp_path / "full", TASKS[1])
    assert not torch.equal(a0[-1], a1[-1])


def test_collection_refuses_other_config(tmp_path):
    model, tok = _fresh()
    collect(CollectionConfig.preset("tiny"), TASKS[:1], tmp_path, model=model, tokenizer=tok, progress=False)
    model, tok = _fresh()
    with pytest.raises(ValueError, match="another config"):
        collect(
            CollectionConfig.preset("tiny", phase1_lr=5e-3),
            TASKS[:1],
            tmp_path,
            model=model,
            tokenizer=tok,
            progress=False,
        )


def test_config_presets_and_validation():
    paper = CollectionConfig.preset("paper")
    assert (paper.phase1_steps, paper.phase1_lr, paper.phase2_steps, paper.phase2_lr) == (75, 1e-4, 50, 1e-5)
    assert (paper.batch_size, paper.max_samples, paper.max_len) == (32, 5000, 384)
    cpu = CollectionConfig.preset("cpu")
    assert cpu.schedule(1)[0] == 1 and cpu.schedule(cpu.total_steps)[0] == 2
    assert cpu.config_hash() != CollectionConfig.preset("cpu", seed=1).config_hash()
    with pytest.raises(ValueError, match="unknown preset"):
        CollectionConfig.preset("huge")
    with pytest.raises(ValueError):
        CollectionConfig.preset("tiny", batch_size=0)


def test_missing_checkpoints_name_the_command(tmp_path):
    paths = ArtifactPaths(tmp_path, "tiny")
    with pytest.raises(MissingArtifactError, match="coral collect --preset tiny --tasks syn_add"):
        paths.load_checkpoints("syn_add")


# ----- CLI ---------------------------------------------------------------------------------------
def _parser():
    from coral_env.setup.commands import register

    parser = argparse.ArgumentParser(prog="coral")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_help_and_errors(tmp_path, capsys):
    parser = _parser()
    for cmd in ("collect", "pretrain-generator"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([cmd, "--help"])
        assert exit_info.value.code == 0
        assert "--preset" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["collect", "--preset", "huge"])
    args = parser.parse_args(["collect", "--preset", "tiny", "--tasks", "syn_add,nope", "--artifacts", str(tmp_path)])
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        args.func(args)
    args = parser.parse_args(["pretrain-generator", "--preset", "tiny", "--artifacts", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="coral collect --preset tiny"):
        args.func(args)
    args = parser.parse_args(
        [
            "pretrain-generator",
            "--preset",
            "tiny",
            "--artifacts",
            str(tmp_path),
            "--tasks",
            "syn_add",
            "--holdout",
            "syn_parity",
        ]
    )
    with pytest.raises(FileNotFoundError, match="coral collect --preset tiny --tasks syn_add"):
        args.func(args)


def test_cli_collect_runs(tmp_path, capsys):
    parser = _parser()
    args = parser.parse_args(
        [
            "collect",
            "--preset",
            "tiny",
            "--tasks",
            "syn_add",
            "--artifacts",
            str(tmp_path),
            "--phase1-steps",
            "2",
            "--phase2-steps",
            "1",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    assert "syn_add: 3 steps" in capsys.readouterr().out
    cfg = json.loads(ArtifactPaths(tmp_path, "tiny").collect_config("syn_add").read_text())
    assert cfg["complete"] and cfg["collection"]["phase1_steps"] == 2
    assert args.func(args) == 0
    assert "already collected" in capsys.readouterr().out
