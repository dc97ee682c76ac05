"""benchmarks/gpu_check.py: the CPU smoke run of the paper-preset GPU check, and its projection."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", _PATH)
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up there
_spec.loader.exec_module(gpu_check)


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    return gpu_check.main(["--device", "cpu", "--small", "--out", str(out)]), out


def test_small_run_times_every_stage_and_writes_its_table(small_report):
    report, out = small_report
    (result,) = report["results"]
    assert result["architecture"] == "tiny"
    assert result["errors"] == {}
    expected = {
        "collection_step",
        "generator_step",
        "cvae_meta_step",
        "env_evaluation",
        "ttl",
        "ttl_step",
        "slot_5_steps",
        "tts_m4",
        "policy_sampling",
    }
    assert set(result["stages_s"]) == expected
    assert all(math.isfinite(v) and v > 0 for k, v in result["stages_s"].items() if k != "ttl_step")
    assert result["evaluated_questions"] == 8
    assert 0.0 <= result["accuracy_random_model"] <= 1.0
    assert result["projected_gpu_hours"] == pytest.approx(gpu_check.project_gpu_hours(result["stages_s"]))
    saved = json.loads((out / "gpu_check.json").read_text())
    assert saved["results"][0]["stages_s"] == result["stages_s"]
    table = (out / "gpu.md").read_text()
    assert "| collection_step (s) |" in table and "| total |" in table


def test_projection_multiplies_the_paper_schedule():
    # every stage 1 s: 750 collection + 35000 generator + 28000 CVAE + 120 sampling calls
    # + 2400 episodes x (1 s evaluation + 0 s extra) + 600 test evaluations = 66870 s
    stages = dict.fromkeys(
        [
            "collection_step",
            "generator_step",
            "cvae_meta_step",
            "env_evaluation",
            "ttl",
            "slot_5_steps",
            "tts_m4",
            "policy_sampling",
        ],
        1.0,
    )
    hours = gpu_check.project_gpu_hours(stages)
    assert hours["total"] == pytest.approx(66870 / 3600)
    assert hours["generator"] == pytest.approx(35000 / 3600)
    assert gpu_check.project_gpu_hours({**stages, "cvae_meta_step": None}) is None  # a failed stage
    stages["tts_m4"] = 4.0  # strategies cost 1 s more on average -> 2400 s more in episodes
    assert gpu_check.project_gpu_hours(stages)["episodes"] == pytest.approx(4800 / 3600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda_names_the_fix():
    with pytest.raises(SystemExit, match="--device cpu --small"):
        gpu_check.main(["--device", "cuda"])
