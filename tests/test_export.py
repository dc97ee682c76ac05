"""Adapters out: ``coral generate`` and ``env.unwrapped.save_adapter`` write PEFT folders that
``peft.PeftModel.from_pretrained`` loads with the same logits as the env's in-place adapter."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch

import coral_env  # noqa: F401  (registers Coral-v0)
from coral_env.cli import main

LORA = '{"family": "LORA", "lambda": 0.3}'


def peft_logits(folder, ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel

    from coral_env.backend.models import load_model

    base, _ = load_model("tiny", dtype="fp32")
    model = PeftModel.from_pretrained(base, str(folder))
    model.eval()
    with torch.no_grad():
        return model(ids).logits


def env_logits(env, adapter: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    runtime = env.unwrapped.runtime
    snapshot = runtime.layout.get_flat()
    try:
        runtime.layout.set_flat(adapter)
        with torch.no_grad():
            return runtime.model(ids).logits
    finally:
        runtime.layout.set_flat(snapshot)


def test_generated_and_episode_adapters_load_in_peft_with_equal_logits(tiny_artifacts, tmp_path) -> None:
    env = gym.make("Coral-v0", task="syn_add", preset="tiny", artifacts=str(tiny_artifacts))
    env.reset(seed=0)
    state = env.unwrapped._state
    ids = env.unwrapped.runtime.tokenizer("Question: What is 2 plus 3?\nAnswer: 5", return_tensors="pt")["input_ids"]
    base = env_logits(env, torch.zeros_like(state.adapter), ids)

    out = tmp_path / "generated"
    assert (
        main(
            [
                "generate",
                "--preset",
                "tiny",
                "--artifacts",
                str(tiny_artifacts),
                "--task",
                "syn_add",
                "--align",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "coral_adapter.json"}
    expected = env_logits(env, state.adapter, ids)  # the episode's starting (generated + aligned) adapter
    assert (expected - base).abs().max() > 1e-4  # the adapter changes the model, so equality means something
    torch.testing.assert_close(peft_logits(out, ids), expected, rtol=1e-5, atol=1e-5)
    assert json.loads((out / "coral_adapter.json").read_text())["source"] == "generated+aligned"

    env.step(LORA)  # the episode's adapter is now the mixed one
    episode = env.unwrapped.save_adapter(tmp_path / "episode")
    mixed = env_logits(env, env.unwrapped._state.adapter, ids)
    assert (mixed - expected).abs().max() > 1e-5
    torch.testing.assert_close(peft_logits(episode, ids), mixed, rtol=1e-5, atol=1e-5)


def test_generate_from_a_prompts_file_and_its_errors(tiny_artifacts, tmp_path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 1 plus 1?\n\nWhat is 4 plus 2?\n")
    common = ["generate", "--preset", "tiny", "--artifacts", str(tiny_artifacts)]
    assert main(common + ["--prompts", str(prompts), "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    (tmp_path / "empty.txt").write_text("\n")
    assert main(common + ["--prompts", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "b")]) == 2
    assert "holds no prompts" in capsys.readouterr().err
    assert main(common + ["--prompts", str(tmp_path / "none.txt"), "--out", str(tmp_path / "b")]) == 2
    assert "is not a file" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(common + ["--prompts", str(prompts), "--out", str(tmp_path / "busy")]) == 2
    assert "is not an adapter folder" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit):  # argparse: --task and --prompts are exclusive
        main(common + ["--prompts", str(prompts), "--task", "syn_add", "--out", str(tmp_path / "c")])
    env = gym.make("Coral-v0", task="syn_add", preset="tiny", artifacts=str(tiny_artifacts))
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.unwrapped.save_adapter(tmp_path / "d")
