"""The split contract and honest artifact selection (issue 15): held out by construction."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import coral_env  # noqa: F401  (registers Coral-v0)
from coral_env.env.runtime import HeldOutError
from coral_env.setup.artifacts import ArtifactPaths
from coral_env.setup.split_manifest import SplitContractError, contract_splits, manifest_path
from coral_env.tasks import (
    PRESET_SPLIT_SIZES,
    SYNTHETIC_TASKS,
    load_task,
    normalize_text,
    preset_split_sizes,
    split_fingerprint,
)

SPLITS = ("train", "support", "validation", "test")
SETUP_TASKS = ["syn_add", "syn_parity", "syn_compare"]  # conftest's tiny_artifacts


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("task", sorted(t.name for t in SYNTHETIC_TASKS))
def test_row_ids_and_texts_are_disjoint_across_splits_at_tiny(task, seed):
    sizes = preset_split_sizes("tiny")
    splits = load_task(task, seed=seed, sizes=sizes)
    ids = {name: [ex.uid for ex in splits.split(name)] for name in SPLITS}
    texts = {name: {normalize_text(ex.question) for ex in splits.split(name)} for name in SPLITS}
    assert [len(ids[s]) for s in SPLITS] == [sizes.max_train, sizes.support, sizes.validation, sizes.test]
    for i, a in enumerate(SPLITS):
        assert len(set(ids[a])) == len(ids[a])
        for b in SPLITS[i + 1 :]:
            assert not set(ids[a]) & set(ids[b]), (a, b)
            assert not texts[a] & texts[b], (a, b)
    other = load_task(task, seed=1 - seed, sizes=sizes)
    assert [ex.uid for ex in other.test] != ids["test"]  # the split seed does move rows


def test_one_set_of_sizes_per_preset_and_every_stage_recorded_it(tiny_artifacts):
    assert PRESET_SPLIT_SIZES["paper"].test == 1000 and PRESET_SPLIT_SIZES["cpu"].test == 300
    paths = ArtifactPaths(tiny_artifacts, "tiny")
    manifest = json.loads(manifest_path(paths).read_text())["tasks"]
    assert set(SETUP_TASKS) <= set(manifest)  # other tests' envs may have recorded more tasks since
    for task in SETUP_TASKS:
        expected = split_fingerprint(
            load_task(task, seed=0, sizes=PRESET_SPLIT_SIZES["tiny"]), 0, PRESET_SPLIT_SIZES["tiny"]
        )
        assert {k: manifest[task][k] for k in expected} == expected
        assert manifest[task]["stage"] == "collect"  # the first stage that used it wrote it


def test_env_seed_never_changes_the_splits(tiny_artifacts):
    envs = [
        gym.make("Coral-v0", task="syn_add", preset="tiny", artifacts=str(tiny_artifacts), seed=seed) for seed in (0, 7)
    ]
    split_sets = [env.unwrapped.runtime.splits("syn_add") for env in envs]
    for name in SPLITS:
        assert [ex.uid for ex in split_sets[0].split(name)] == [ex.uid for ex in split_sets[1].split(name)]
    assert envs[0].unwrapped.runtime.strategy_context(envs[0].unwrapped.runtime.task("syn_add")).seed == 0
    assert envs[1].unwrapped.runtime.strategy_context(envs[1].unwrapped.runtime.task("syn_add")).seed == 7


def test_a_different_split_seed_is_a_clear_error_naming_the_manifest_and_fix(tiny_artifacts):
    paths = ArtifactPaths(tiny_artifacts, "tiny")
    with pytest.raises(SplitContractError) as err:
        contract_splits(paths, "syn_add", split_seed=1)
    message = str(err.value)
    assert str(manifest_path(paths)) in message and "split seed 0 recorded, 1 now" in message
    assert "use split seed 0" in message and "coral setup --preset tiny" in message
    with pytest.raises(SplitContractError, match="splits.json"):
        gym.make("Coral-v0", task="syn_add", preset="tiny", artifacts=str(tiny_artifacts), split_seed=1)


def test_changed_rows_are_caught_and_new_tasks_recorded(tiny_artifacts, tmp_path):
    root = tmp_path / "root"
    paths = ArtifactPaths(root, "tiny")
    contract_splits(paths, "syn_sum")  # first use records it
    recorded = json.loads(manifest_path(paths).read_text())
    assert list(recorded["tasks"]) == ["syn_sum"]
    recorded["tasks"]["syn_sum"]["row_ids"]["test"] = "0" * 16  # as if the data file had changed
    manifest_path(paths).write_text(json.dumps(recorded))
    with pytest.raises(SplitContractError, match="the rows of test differ"):
        contract_splits(paths, "syn_sum")
    assert (
        contract_splits(paths, "syn_count", record=False)
        and "syn_count" not in json.loads(manifest_path(paths).read_text())["tasks"]
    )


def test_coral_eval_limit_never_recarves(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "coral_env.cli",
        "eval",
        "--model",
        "tiny",
        "--task",
        "syn_add",
        "--preset",
        "tiny",
        "--artifacts",
        str(tmp_path),
        "--limit",
        "17",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 2
    assert "--limit 17 asks for more than the 16 test rows" in out.stderr and "--preset cpu" in out.stderr


def test_setup_with_split_seed_1_is_matched_by_the_env_with_split_seed_1(tmp_path, capsys):
    from coral_env.cli import main

    root = str(tmp_path / "seed1")
    common = ["--preset", "tiny", "--artifacts", root, "--no-progress", "--threads", "1"]
    assert main(["setup", "--tasks", "syn_add", "--split-seed", "1", *common]) == 0
    paths = ArtifactPaths(root, "tiny")
    recorded = json.loads(manifest_path(paths).read_text())["tasks"]["syn_add"]
    sizes = PRESET_SPLIT_SIZES["tiny"]
    expected = split_fingerprint(load_task("syn_add", seed=1, sizes=sizes), 1, sizes)
    assert recorded["split_seed"] == 1 and {k: recorded[k] for k in expected} == expected
    env = gym.make("Coral-v0", task="syn_add", preset="tiny", artifacts=root, split_seed=1)
    env.reset(seed=0)
    served = env.unwrapped.runtime.splits("syn_add")
    assert [ex.uid for ex in served.test] == [ex.uid for ex in load_task("syn_add", seed=1, sizes=sizes).test]
    with pytest.raises(SplitContractError) as err:
        gym.make("Coral-v0", task="syn_add", preset="tiny", artifacts=root)  # split_seed 0 by default
    message = str(err.value)
    assert str(manifest_path(paths)) in message and "split seed 1 recorded, 0 now" in message
    assert "`--split-seed 1`" in message and "split_seed=1" in message
    capsys.readouterr()
    assert main(["collect", "--tasks", "syn_add", *common]) == 2  # a later stage at the default seed
    assert "split seed 1 recorded, 0 now" in capsys.readouterr().err
    assert main(["collect", "--tasks", "syn_add", "--split-seed", "1", *common]) == 0
    assert "syn_add: already collected" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["setup", "collect", "pretrain-generator", "pretrain-cvae", "generate"])
def test_setup_commands_refuse_threads_zero_before_anything_runs(command, tmp_path, capsys):
    from coral_env.cli import main

    root = tmp_path / "untouched"
    task = ["--task", "syn_add", "--out", str(root / "adapter")] if command == "generate" else ["--tasks", "syn_add"]
    assert main([command, "--preset", "tiny", *task, "--artifacts", str(root), "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
    assert not root.exists()


def test_eval_bench_checks_the_split_manifest_before_it_runs(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_bench", Path(__file__).parents[1] / "benchmarks/eval_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    paths = ArtifactPaths(tmp_path / "root", "tiny")
    contract_splits(paths, "syn_add", split_seed=1)  # artifacts whose syn_add was split with seed 1
    monkeypatch.setattr(bench, "TASK", "syn_add")
    out = tmp_path / "out"
    argv = ["--preset", "tiny", "--artifacts", str(tmp_path / "root"), "--limit", "8", "--out", str(out)]
    with pytest.raises(SplitContractError, match="split seed 1 recorded, 0 now") as err:
        bench.main(argv)
    assert str(manifest_path(paths)) in str(err.value) and not out.exists()  # stopped before any run
    matched = bench.bench_examples(8, "tiny", tmp_path / "root", split_seed=1, task="syn_add")
    sizes = PRESET_SPLIT_SIZES["tiny"]
    assert [ex.uid for ex in matched] == [ex.uid for ex in load_task("syn_add", seed=1, sizes=sizes).test[:8]]
    with pytest.raises(ValueError, match="more than the 16 syn_add test rows"):
        bench.bench_examples(17, "tiny", tmp_path / "root", split_seed=1, task="syn_add")
    assert set(json.loads(manifest_path(paths).read_text())["tasks"]) == {"syn_add"}  # read only


# ----- honest artifact selection ------------------------------------------------------------------
def test_info_says_whether_the_task_is_held_out(tiny_artifacts):
    env = gym.make("Coral-v0", task=["syn_add", "syn_sum"], preset="tiny", artifacts=str(tiny_artifacts))
    assert env.reset(options={"task": "syn_add"})[1]["heldout"] is False  # setup trained on it
    assert env.reset(options={"task": "syn_sum"})[1]["heldout"] is True  # never seen by setup


def test_strict_heldout_refuses_with_the_fix_command(tiny_artifacts):
    with pytest.raises(HeldOutError) as err:
        gym.make("Coral-v0", task="syn_parity", preset="tiny", artifacts=str(tiny_artifacts), strict_heldout=True)
    assert f"coral setup --preset tiny --artifacts {tiny_artifacts} --holdout syn_parity" in str(err.value)
    env = gym.make("Coral-v0", task="syn_sum", preset="tiny", artifacts=str(tiny_artifacts), strict_heldout=True)
    assert env.unwrapped.strict_heldout


def _fake_leave_one_out(root: Path, task: str, *, cvae_tasks: list[str]) -> None:
    """Copy the "all" generator and CVAE to ``task``'s leave-one-out folders, recording training
    tasks as a leave-one-out run would (the CVAE's are chosen by the caller)."""
    base = root / "tiny"
    for kind, sub, tasks in (("generator", "", [t for t in SETUP_TASKS if t != task]), ("cvae", "input", cvae_tasks)):
        src, dst = base / kind / "all" / sub, base / kind / task / sub
        shutil.copytree(src, dst)
        config = json.loads((dst / "config.json").read_text())
        config["extra"]["tasks"] = tasks
        (dst / "config.json").write_text(json.dumps(config))


def test_leave_one_out_artifacts_are_selected_and_strictly_checked(tiny_artifacts, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, root)
    _fake_leave_one_out(root, "syn_add", cvae_tasks=["syn_parity", "syn_compare"])
    _fake_leave_one_out(root, "syn_compare", cvae_tasks=SETUP_TASKS)  # a CVAE that saw the task
    make = lambda task, **kw: gym.make("Coral-v0", task=task, preset="tiny", artifacts=str(root), **kw)  # noqa: E731
    runtime = make("syn_add").unwrapped.runtime
    found = runtime.provenance("syn_add")
    assert found["generator"].endswith("generator/syn_add") and found["cvae"].endswith("cvae/syn_add/input")
    assert found["heldout"] is True
    assert make("syn_add", strict_heldout=True).reset()[1]["heldout"] is True
    assert runtime.provenance("syn_parity")["generator"].endswith("generator/all")
    assert runtime.provenance("syn_compare")["heldout"] is False  # its generator is clean, its CVAE is not
    with pytest.raises(HeldOutError, match="--holdout syn_compare"):
        make("syn_compare", strict_heldout=True)
