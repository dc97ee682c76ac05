"""benchmarks/landscape.py at the tiny preset: cells, resume, bad input, a user task, the report."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "landscape.py"
_spec = importlib.util.spec_from_file_location("landscape", _PATH)
landscape = importlib.util.module_from_spec(_spec)
sys.modules["landscape"] = landscape
_spec.loader.exec_module(landscape)


@pytest.fixture(scope="module")
def artifacts(tiny_artifacts, tmp_path_factory):
    """A private copy: the landscape records new tasks in the split manifest."""
    root = tmp_path_factory.mktemp("landscape") / "artifacts"
    shutil.copytree(tiny_artifacts, root)
    return root


STRATEGIES = ["noop", "LORA:lambda=0.5", '{"family": "Latent", "slot_steps": 2, "slot_lr": 0.5}']


def _args(artifacts, out, *extra):
    return [
        "--preset",
        "tiny",
        "--artifacts",
        str(artifacts),
        "--tasks",
        "syn_sequence",
        "--out",
        str(out),
        "--no-progress",
        "--strategies",
        *STRATEGIES,
        *extra,
    ]


def test_cells_report_and_resume(artifacts, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert landscape.main(_args(artifacts, out)) == 0
    rows = landscape.read_rows(out / "cells.jsonl")
    cells = {r["strategy"]: r for r in rows}
    assert set(cells) == {"noop", "LORA:lambda=0.5", "Latent:steps=2,lr=0.5", "__reference__"}
    noop = cells["noop"]
    assert noop["val_change"] == 0 and noop["test_flipped"] == 0 and noop["reward_binary"] == 0
    slot = cells["Latent:steps=2,lr=0.5"]
    before, after = landscape._unbits(slot["test_correct_before"]), landscape._unbits(slot["test_correct_after"])
    assert slot["test_acc_change"] == pytest.approx(after.mean() - before.mean())
    assert slot["test_ci"][0] <= slot["test_acc_change"] <= slot["test_ci"][1] or slot["test_metric"] != "accuracy"
    assert cells["__reference__"]["heldout"] is True  # syn_sequence is not among the tiny setup tasks
    summary = json.loads((out / "landscape_summary.json").read_text())
    task = summary["tasks"]["syn_sequence"]
    changes = [cells[n]["test_change"] for n in ("LORA:lambda=0.5", "Latent:steps=2,lr=0.5")]
    assert task["random_test_gain"] == pytest.approx(sum(changes) / 2)
    oracle = max(
        ("LORA:lambda=0.5", "Latent:steps=2,lr=0.5"), key=lambda n: (cells[n]["val_change"], -cells[n]["seconds"])
    )
    assert task["oracle_test_gain"] == cells[oracle]["test_change"]
    assert set(summary["false_reward_rate"]) == {"binary", "significant"}
    assert (
        "| syn_sequence | 16 / 16 | 2 | True |" in (out / "landscape.md").read_text()
        and (out / "landscape.png").stat().st_size > 0
    )

    # a killed run resumes: finished cells are not recomputed, a torn last line is dropped
    with (out / "cells.jsonl").open("a") as f:
        f.write('{"task": "syn_sequence", "strat')
    calls = []
    monkeypatch.setattr(landscape, "run_cell", lambda *a: calls.append(a[2]) or {})
    landscape.main(_args(artifacts, out))
    assert calls == []
    assert len(landscape.read_rows(out / "cells.jsonl")) == 4


def test_bad_input_names_the_fix(artifacts, tmp_path, capsys):
    with pytest.raises(SystemExit):
        landscape.main(["--preset", "tiny", "--tasks", "syn_sequence", "--out", str(tmp_path), "--workers", "0"])
    assert "--workers must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="syn_sequence"):
        landscape.main(["--preset", "tiny", "--tasks", "syn_sequense", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown strategy 'LORA:lambda=0.3'.*catalogue labels"):
        landscape.main(
            ["--preset", "tiny", "--tasks", "syn_sequence", "--out", str(tmp_path), "--strategies", "LORA:lambda=0.3"]
        )
    with pytest.raises(SystemExit, match="(?s)no data.*--data-dir"):
        landscape.main(
            ["--preset", "tiny", "--tasks", "arc_easy", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path)]
        )
    with pytest.raises(Exception, match="not held out.*--holdout syn_add"):
        landscape.main(
            [
                "--preset",
                "tiny",
                "--artifacts",
                str(artifacts),
                "--tasks",
                "syn_add",
                "--out",
                str(tmp_path),
                "--strategies",
                "noop",
                "--no-progress",
            ]
        )


def test_user_defined_task(artifacts, tmp_path):
    rows = [{"q": f"Is {i} smaller than {i + 3}?", "opts": ["yes", "no"], "gold": 0} for i in range(120)]
    (tmp_path / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "mine.json").write_text(
        json.dumps(
            {
                "name": "my_cmp",
                "path": "mine.jsonl",
                "question_field": "q",
                "choices_field": "opts",
                "label_field": "gold",
            }
        )
    )
    out = tmp_path / "run"
    landscape.main(
        [
            "--preset",
            "tiny",
            "--artifacts",
            str(artifacts),
            "--tasks",
            "my_cmp",
            "--user-task",
            str(tmp_path / "mine.json"),
            "--out",
            str(out),
            "--no-progress",
            "--strategies",
            "noop",
            "LORA:lambda=1",
        ]
    )
    cells = {r["strategy"]: r for r in landscape.read_rows(out / "cells.jsonl")}
    assert cells["LORA:lambda=1"]["test_n"] == 16 and cells["__reference__"]["kind"] == "multiple_choice"


def test_generative_tasks_are_scored_on_the_first_questions_of_each_split(artifacts, tmp_path):
    def run(limit: str, out):
        argv = _args(artifacts, out, "--generative-limit", limit)
        argv[argv.index("syn_sequence")] = "syn_sum"  # generative, not among the tiny setup tasks
        argv[argv.index("--strategies") + 1 :] = ["noop", "LORA:lambda=0.5", "--generative-limit", limit]
        assert landscape.main(argv) == 0
        return {r["strategy"]: r for r in landscape.read_rows(out / "cells.jsonl")}

    cut = run("5", tmp_path / "cut")
    assert cut["LORA:lambda=0.5"]["val_n"] == cut["LORA:lambda=0.5"]["test_n"] == 5
    assert (cut["__reference__"]["n_val"], cut["__reference__"]["n_test"]) == (5, 5)
    assert "| syn_sum | 5 / 5 |" in (tmp_path / "cut" / "landscape.md").read_text()
    whole = run("0", tmp_path / "whole")
    assert whole["LORA:lambda=0.5"]["val_n"] == 16 and whole["__reference__"]["n_test"] == 16
    # the same first five questions: the cut run's correctness is a prefix of the whole run's
    assert whole["LORA:lambda=0.5"]["val_correct_after"].startswith(cut["LORA:lambda=0.5"]["val_correct_after"])


def test_ray_actors_score_the_same_cells_as_one_process(artifacts, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        assert landscape.main(_args(artifacts, tmp_path / "one")) == 0
        assert landscape.main(_args(artifacts, tmp_path / "two", "--workers", "2", "--threads", "1")) == 0
    finally:
        ray.shutdown()

    def cells(folder):
        rows = landscape.read_rows(tmp_path / folder / "cells.jsonl")
        return {r["strategy"]: {k: v for k, v in r.items() if k != "seconds"} for r in rows}

    one, two = cells("one"), cells("two")
    assert set(two) == {"__reference__", "noop", "LORA:lambda=0.5", "Latent:steps=2,lr=0.5"}
    assert two == one
    assert two["Latent:steps=2,lr=0.5"]["test_flipped"] > 0  # a cell that changes predictions, not only no-ops
