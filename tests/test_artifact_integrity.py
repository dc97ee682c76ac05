"""Corrupt or incomplete artifacts are errors naming the file and the fix; JSON is standard;
equal artifacts are byte-identical; configs compare by meaning."""

import json
import os
import shutil

import pytest
import torch

from coral_env.backend.io import CorruptArtifactError, atomic_save_safetensors, atomic_write_json, read_json, trim_jsonl
from coral_env.setup.artifacts import ArtifactPaths


@pytest.fixture()
def copy(tiny_artifacts, tmp_path):
    """A private copy of the tiny artifacts, free to corrupt."""
    root = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, root)
    return root


def _load_generator(root):
    from coral_env.agents.generator import Generator

    return Generator.from_pretrained(ArtifactPaths(root, "tiny").generator_dir())


def test_truncated_safetensors_names_the_file_and_the_fix(copy):
    weights = ArtifactPaths(copy, "tiny").generator_dir() / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArtifactError) as err:
        _load_generator(copy)
    message = str(err.value)
    assert str(weights) in message and "corrupt or incomplete" in message
    assert f"delete {weights.parent} and re-run `coral pretrain-generator`" in message
    weights.write_bytes(data[:5])  # shorter than the header length itself
    with pytest.raises(CorruptArtifactError, match="model.safetensors is corrupt"):
        _load_generator(copy)


@pytest.mark.parametrize("text, why", [("{not json", "not valid JSON"), ("[]", "a JSON list where an object")])
def test_garbage_config_json_names_the_file_and_the_fix(copy, text, why):
    cfg = ArtifactPaths(copy, "tiny").generator_dir() / "config.json"
    cfg.write_text(text)
    with pytest.raises(CorruptArtifactError) as err:
        _load_generator(copy)
    assert str(cfg) in str(err.value) and why in str(err.value)
    assert "re-run `coral pretrain-generator`" in str(err.value)


def test_garbage_collection_config_names_the_collect_command(copy):
    paths = ArtifactPaths(copy, "tiny")
    paths.collect_config("syn_add").write_text("[]")
    with pytest.raises(CorruptArtifactError) as err:
        paths.collected_tasks()
    assert str(paths.collect_config("syn_add")) in str(err.value)
    assert f"delete {paths.collect_dir('syn_add')} and re-run `coral collect --preset tiny --tasks syn_add" in str(
        err.value
    )


def test_missing_or_corrupt_checkpoint_is_noticed(copy):
    paths = ArtifactPaths(copy, "tiny")
    assert paths.load_checkpoints("syn_add")[0].shape[0] == 7
    paths.checkpoint_file("syn_add", 3).unlink()
    with pytest.raises(CorruptArtifactError) as err:
        paths.load_checkpoints("syn_add")
    assert "1 of 7 checkpoints missing (step_00003)" in str(err.value)
    assert f"delete {paths.collect_dir('syn_add')} and re-run `coral collect" in str(err.value)

    paths.checkpoint_file("syn_parity", 5).write_bytes(b"\0" * 40)
    with pytest.raises(CorruptArtifactError, match="step_00005.safetensors is corrupt"):
        paths.load_checkpoints("syn_parity")


def test_corrupt_stage_state_and_context_cache(copy):
    from coral_env.setup.collect import CollectionConfig, collect

    paths = ArtifactPaths(copy, "tiny")
    info = json.loads(paths.collect_config("syn_add").read_text())
    paths.collect_config("syn_add").write_text(json.dumps(info | {"complete": False}))
    paths.collect_state("syn_add").write_bytes(b"garbage")
    with pytest.raises(CorruptArtifactError) as err:
        collect(CollectionConfig.preset("tiny"), ["syn_add"], copy, progress=False)
    assert str(paths.collect_state("syn_add")) in str(err.value) and "delete it and re-run" in str(err.value)

    import gymnasium as gym

    import coral_env  # noqa: F401  (registers Coral-v0)

    env = gym.make("Coral-v0", task="syn_parity", preset="tiny", artifacts=str(copy))
    env.reset(seed=0)  # writes the context cache
    cached = next((paths.base / "contexts").glob("syn_parity-*.json"))
    cached.write_text('{"task": "syn_parity"}')
    env.unwrapped.runtime._tasks.clear()
    with pytest.raises(CorruptArtifactError) as err:
        env.reset(seed=0)
    assert str(cached) in str(err.value) and "delete it (the next reset writes the context again)" in str(err.value)


def test_json_is_standard_and_metadata_sorted(tmp_path, caplog):
    atomic_write_json(tmp_path / "a.json", {"loss": float("nan"), "inf": [float("inf")], "ok": 1.5})
    text = (tmp_path / "a.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "inf": [None], "ok": 1.5}
    assert "non-finite value nan at .loss" in caplog.text

    tensors = {"b": torch.arange(4.0), "a": torch.ones(2, dtype=torch.float16)}
    meta = {f"key{i}": i for i in range(12)}
    files = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for path in files:
        atomic_save_safetensors(path, tensors, dict(reversed(meta.items())) if path.stem == "1" else meta)
    assert len({p.read_bytes() for p in files}) == 1  # hash-ordered metadata would differ
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(files[0]))["b"], tensors["b"])


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / ".x.json.999999999.abc.tmp"  # no such pid
    alive = tmp_path / f".x.json.{os.getppid()}.def.tmp"
    dead.write_text("")
    alive.write_text("")
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert not dead.exists() and alive.exists()
    assert read_json(tmp_path / "x.json", "") == {"a": 1}


def test_trim_jsonl_drops_rows_past_the_saved_step_and_cut_lines(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"ste')
    trim_jsonl(log, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_setup_then_stage_commands_with_defaults_skip(tiny_artifacts, capsys):
    """`coral setup --preset tiny` trains on the tiny tasks in their listed order; the stage
    commands default to the sorted collected tasks: the same set, so they skip."""
    from coral_env.cli import main

    base = tiny_artifacts / "tiny"
    watched = [base / "generator" / "all" / "model.safetensors", base / "cvae" / "all" / "input" / "model.safetensors"]
    before = [(p.read_bytes(), p.stat().st_mtime_ns) for p in watched]
    for command in ("pretrain-generator", "pretrain-cvae"):
        assert main([command, "--preset", "tiny", "--artifacts", str(tiny_artifacts), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "generator[all]: trained on syn_add, syn_compare, syn_parity" in out
    assert "cvae[all/input]: trained on syn_add, syn_compare, syn_parity" in out
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in watched] == before
