"""Every resumable job, SIGKILLed at chosen points and resumed, ends with the artifacts of an
uninterrupted run: safetensors byte for byte, JSON/JSONL equal but for timings, no temp files.

Each job runs as a subprocess (tests/killresume.py); one subprocess costs ~10-25 s at the tiny
preset on a shared 2-core machine, so the jobs are marked ``slow`` (``pytest -m slow
tests/test_kill_resume.py``); the harness itself is tested by default on a small stand-in job.
"""

import shutil

import pytest
from killresume import KillPoint, assert_same_artifacts, kill_then_resume, run_job


def _twice(tmp_path, args_for, points, ignore=(), prepare=None):
    """The job uninterrupted in ``ref``, killed at ``points`` and resumed in ``cut``; compared."""
    roots = {name: tmp_path / name for name in ("ref", "cut")}
    if prepare is not None:
        for root in roots.values():
            prepare(root)
    done = run_job(args_for(roots["ref"]))
    assert done.returncode == 0, done.stderr[-3000:]
    kill_then_resume(args_for(roots["cut"]), points)
    return assert_same_artifacts(roots["ref"], roots["cut"], ignore)


def _copy_artifacts(source, drop=()):
    def prepare(root):
        shutil.copytree(source, root / "art")
        for rel in drop:
            shutil.rmtree(root / "art" / rel)

    return prepare


STEPS_JOB = """
import sys
from pathlib import Path
from coral_env.backend.io import atomic_write_json
out, salt = Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
for step in range(1, 6):
    path = out / f"step_{step}.json"
    if not path.exists():  # resumable: finished steps are skipped
        atomic_write_json(path, {"step": step, "value": step * step + salt, "seconds": 0.1 * step})
"""


def test_harness_kills_at_points_and_compares(tmp_path):
    args = lambda root, *extra: ["-c", STEPS_JOB, str(root), *extra]  # noqa: E731
    assert run_job(args(tmp_path / "ref")).returncode == 0
    kill_then_resume(args(tmp_path / "cut"), [KillPoint("*/step_2.json"), KillPoint("*/step_4.json", 1, "before")])
    assert_same_artifacts(tmp_path / "ref", tmp_path / "cut")  # timings ("seconds") are not compared

    # A temp file left behind is found, and so is a resumed run that differs.
    stale = tmp_path / "cut" / ".step_9.json.123.abc.tmp"
    stale.write_text("")
    with pytest.raises(AssertionError, match="temp file left"):
        assert_same_artifacts(tmp_path / "ref", tmp_path / "cut")
    stale.unlink()
    assert run_job(args(tmp_path / "bad"), KillPoint("*/step_3.json")).returncode == -9
    assert run_job(args(tmp_path / "bad", "0.5")).returncode == 0  # the resume computes other values
    with pytest.raises(AssertionError, match="step_4.json differs"):
        assert_same_artifacts(tmp_path / "ref", tmp_path / "bad")
    with pytest.raises(AssertionError, match="was not reached"):
        kill_then_resume(args(tmp_path / "ref"), [KillPoint("*/step_1.json")])  # nothing left to write


@pytest.mark.slow
def test_collection(tmp_path):
    args = lambda root: [
        "-m",
        "coral_env.cli",
        "collect",
        "--preset",
        "tiny",
        "--tasks",
        "syn_add",  # noqa: E731
        "--artifacts",
        str(root),
        "--no-progress",
    ]
    # Killed mid-write of the step-4 resume state: a temp file is left, and the resume redoes step 4.
    compared = _twice(tmp_path, args, [KillPoint("*/syn_add/state.safetensors", 4, "before")])
    assert "tiny/collect/syn_add/checkpoints/step_00007.safetensors" in compared


@pytest.mark.slow
def test_collection_more_points(tmp_path):
    args = lambda root: [
        "-m",
        "coral_env.cli",
        "collect",
        "--preset",
        "tiny",
        "--tasks",
        "syn_add,syn_parity",  # noqa: E731
        "--artifacts",
        str(root),
        "--no-progress",
    ]
    _twice(
        tmp_path,
        args,
        [
            KillPoint("*/syn_add/checkpoints/step_00002.safetensors"),
            KillPoint("*/syn_add/config.json"),  # (counts restart in each run) syn_add complete
            KillPoint("*/syn_parity/config.json", 2),
        ],
    )  # the last instant


@pytest.mark.slow
def test_generator(tmp_path, tiny_artifacts):
    args = lambda root: [
        "-m",
        "coral_env.cli",
        "pretrain-generator",
        "--preset",
        "tiny",  # noqa: E731
        "--artifacts",
        str(root / "art"),
        "--no-progress",
    ]
    _twice(
        tmp_path,
        args,
        [
            KillPoint("*/generator/all/train_state.safetensors", 2),
            KillPoint("*/generator/all/model.safetensors", 1, "before"),
            KillPoint("*/generator/all/train_config.json", 2),
        ],  # the last instant
        prepare=_copy_artifacts(tiny_artifacts, drop=("tiny/generator",)),
    )


@pytest.mark.slow
def test_cvae(tmp_path, tiny_artifacts):
    args = lambda root: [
        "-m",
        "coral_env.cli",
        "pretrain-cvae",
        "--preset",
        "tiny",  # noqa: E731
        "--artifacts",
        str(root / "art"),
        "--no-progress",
    ]
    _twice(
        tmp_path,
        args,
        [
            KillPoint("*/cvae/all/input/train_state.safetensors", 2),
            KillPoint("*/cvae/all/input/config.json"),  # model saved, not marked complete
            KillPoint("*/cvae/all/input/train_config.json", 2),
        ],  # before the state is removed
        prepare=_copy_artifacts(tiny_artifacts, drop=("tiny/cvae",)),
    )


@pytest.mark.slow
def test_restem(tmp_path, tiny_artifacts):
    # At tiny the random policy writes no valid strategy, so no SFT runs (test_restem.py covers
    # the adapter with a stub sampler); the kills cover sampling, scoring, evaluation and the log.
    args = lambda root: [
        "-m",
        "coral_env.cli",
        "restem",
        "--preset",
        "tiny",
        "--out",
        str(root / "run"),  # noqa: E731
        "--artifacts",
        str(root / "art"),
        "--no-progress",
    ]
    _twice(
        tmp_path,
        args,
        [
            KillPoint("*/iter_0/eval.json"),  # the case: before its log line
            KillPoint("*/iter_1/samples/syn_add.json", 2),  # one reply scored
            KillPoint("*/iter_1/samples/syn_compare.json", 1, "before"),
            KillPoint("*/iter_1/dataset.json"),
            KillPoint("*/iter_1/iteration.json"),
        ],  # the last instant
        prepare=_copy_artifacts(tiny_artifacts),
    )


@pytest.mark.slow
def test_sb3(tmp_path, tiny_artifacts):
    args = lambda root: [
        "-m",
        "coral_env.cli",
        "sb3",
        "--preset",
        "tiny",
        "--out",
        str(root / "run"),  # noqa: E731
        "--artifacts",
        str(root / "art"),
        "--total-timesteps",
        "64",
        "--no-progress",
    ]
    _twice(
        tmp_path,
        args,
        [KillPoint("*/run/policy", 1, "before"), KillPoint("*/run/eval.json")],
        prepare=_copy_artifacts(tiny_artifacts),
    )


BASELINES = """
import sys
import torch
from coral_env.backend.lora import AdapterLayout, LoraSpec, attach_lora
from coral_env.backend.models import load_model
from coral_env.setup.baselines import BaselineConfig, run_baselines
from coral_env.tasks import SplitSizes, load_task

torch.manual_seed(0)
model, tok = load_model("tiny", dtype="fp32")
model = attach_lora(model, LoraSpec(rank=2, alpha=4))
layout = AdapterLayout.from_model(model, token_dim=64)
sizes = SplitSizes(support=8, validation=8, test=8, max_train=32)
splits = {t: load_task(t, seed=0, sizes=sizes) for t in ("syn_add", "syn_compare", "syn_parity")}
evaluate = lambda task, adapter: {"accuracy": float(adapter.double().sum()), "n": 8, "ci95": [0.0, 1.0]}
run_baselines(model, tok, layout, layout.get_flat(), BaselineConfig.preset("tiny", meta_steps=4, save_every=1),
              targets=["syn_parity", "syn_add"], train_tasks=["syn_add", "syn_compare", "syn_parity"],
              out=sys.argv[1], load_splits=splits.__getitem__, evaluate_test=evaluate, progress=False)
"""


@pytest.mark.slow
def test_baselines(tmp_path):
    args = lambda root: ["-c", BASELINES, str(root / "baselines")]  # noqa: E731
    _twice(
        tmp_path,
        args,
        [
            KillPoint("*/maml_fo/pool-*/state.safetensors", 2),
            KillPoint("*/abmll_fo/pool-*/adapter.safetensors"),  # before its config.json
            KillPoint("*/abmll_fo/pool-*/adapter.safetensors", 1, "before"),
            KillPoint("*/abmll_fo/syn_add/result.json"),
        ],
    )  # the last instant
