"""``coral demo`` end to end at the tiny preset, and ``coral report`` from its run folder."""

import json

import pytest

from trainers.demo import DemoConfig, policy_rows, run_demo
from trainers.report import group_average, table, task_group


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    config = DemoConfig.from_preset("tiny", out=str(out), progress=False, threads=1)
    report = run_demo(config)
    return out, report, config


def test_demo_runs_every_stage_and_writes_the_report(demo_run):
    out, report, config = demo_run
    text = report.read_text()
    for label in (
        "Base model",
        "No Meta-Train LoRA",
        "Union Train LoRA",
        "MAML-en-LLM (first-order)",
        "ABMLL (first-order)",
        "CORAL: generator",
        "CORAL: generator + alignment",
        "CORAL: + policy (zero-shot LLM)",
        "CORAL: + policy (ReST^EM iter 1)",
    ):
        assert label in text, label
    assert (out / "agent_contribution.png").stat().st_size > 5000
    assert (out / "strategy_choice.png").stat().st_size > 5000
    rows = [json.loads(line) for line in (out / "methods.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == set(config.eval_tasks)
    assert all(0 <= r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] <= 1 for r in rows)
    meta = json.loads((out / "run.json").read_text())
    assert set(meta["stage_seconds"]) == {"setup", "restem", "pipeline", "baselines"}
    # held-out tasks were never trained on: the generator was trained on the train tasks only
    gen_cfg = json.loads((out / "artifacts" / "tiny" / "generator" / "all" / "config.json").read_text())
    assert "syn_parity" not in json.dumps(gen_cfg.get("tasks", gen_cfg))


def test_demo_resumes_without_redoing_work(demo_run):
    out, _, config = demo_run
    before = (out / "methods.jsonl").read_text()
    mtimes = {p: p.stat().st_mtime for p in (out / "baselines").rglob("result.json")}
    run_demo(config)
    assert (out / "methods.jsonl").read_text() == before
    assert {p: p.stat().st_mtime for p in (out / "baselines").rglob("result.json")} == mtimes


def test_report_command_rewrites_the_report(demo_run, tmp_path, capsys):
    from coral_env.cli import main

    out, _, _ = demo_run
    assert main(["report", "--run", str(out), "--out", str(tmp_path), "--title", "Again"]) == 0
    rewritten = (tmp_path / "report.md").read_text()
    assert rewritten.startswith("# Again") and "## Notes" in rewritten and "first-order" in rewritten
    assert (tmp_path / "agent_contribution.png").exists()
    assert "report:" in capsys.readouterr().out


def test_report_on_an_empty_folder_says_what_to_run(tmp_path, capsys):
    from coral_env.cli import main

    assert main(["report", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "methods.jsonl" in err and "coral demo --out" in err


def test_demo_settings_are_checked():
    with pytest.raises(ValueError, match="held-out tasks must not be trained on"):
        DemoConfig.from_preset("tiny", train_tasks=["syn_add"], eval_tasks=["syn_add"])
    with pytest.raises(ValueError, match="unknown baseline"):
        DemoConfig.from_preset("tiny", baselines=["reptile"])
    with pytest.raises(ValueError, match="--samples-per-task must be >= 1"):
        DemoConfig.from_preset("tiny", samples_per_task=0)
    cfg = DemoConfig.from_preset("cpu", data_dir="/somewhere")
    assert cfg.train_tasks == ["arc_easy", "piqa", "boolq", "winogrande"]


def test_table_layout_groups_and_averages():
    rows = [
        {"method": "base", "label": "Base", "task": t, "accuracy": a, "n": 100, "ci95": [a - 0.1, a + 0.1]}
        for t, a in (("arc_easy", 0.5), ("boolq", 0.7), ("gsm8k", 0.1), ("syn_add", 0.9))
    ]
    md = table(rows)
    header = md.splitlines()[0]
    assert header.index("arc_easy") < header.index("gsm8k") < header.index("syn_add")
    assert "in-domain avg" in header and "out-of-domain avg" in header and "synthetic avg" in header
    assert "60.0 ±" in md.splitlines()[2]  # in-domain average of 50 and 70
    mean, half = group_average(rows[:2])
    assert mean == pytest.approx(0.6) and half == pytest.approx(1.96 * ((0.25 / 100 + 0.21 / 100) ** 0.5) / 2)
    assert task_group("arc_challenge") == "in-domain" and task_group("jama") == "out-of-domain"
    assert task_group("syn_add") == task_group("ctl_sub_3") == "synthetic"


def test_policy_rows_average_test_accuracy_per_iteration():
    episodes = [
        {"policy": "zero_shot", "task": "t", "test_accuracy": 0.4, "family": "LORA"},
        {"policy": "zero_shot", "task": "t", "test_accuracy": 0.6, "family": "TTS"},
        {"policy": "restem_iter2", "task": "t", "test_accuracy": 0.7, "family": "TTS"},
    ]
    rows = policy_rows(episodes, {"t": 50})
    assert [(r["method"], r["accuracy"], r["episodes"]) for r in rows] == [
        ("coral_policy_zero_shot", 0.5, 2),
        ("coral_policy_restem_2", 0.7, 1),
    ]
    assert rows[0]["n"] == 50 and rows[0]["ci95"][0] < 0.5 < rows[0]["ci95"][1]
