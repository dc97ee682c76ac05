"""``coral demo`` end to end at the tiny preset, and ``coral report`` from its run folder."""

import json

import pytest

from trainers.demo import DemoConfig, run_demo
from trainers.demo_rows import policy_rows
from trainers.report import gain_table, group_average, table, task_group


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
        "Mean adapter of the setup tasks",
        "CORAL: generator",
        "CORAL: generator + alignment",
        "Policy: oracle",
        "Policy: random",
        "Policy: fixed rule",
        "Policy: zero-shot LLM",
        "Policy: ReST^EM, iteration 1",
        "Policy: ReST^EM, iteration 2",
        "Policy: PPO (SB3)",
        "Policy: ReST^EM, closed loop",
        "No Meta-Train LoRA",
        "Union Train LoRA",
        "MAML-en-LLM (first-order)",
        "ABMLL (first-order)",
    ):
        assert label in text, label
    for figure in ("agent_contribution", "learning_curve", "strategy_choice"):
        assert (out / f"{figure}.png").stat().st_size > 5000
    assert text.index("![agent contribution]") < text.index("## Test accuracy")  # the report opens with figures
    rows = [json.loads(line) for line in (out / "methods.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == set(config.eval_tasks + config.stage_tasks)
    assert {r["task"] for r in rows if r["group"] == "policy"} == set(config.eval_tasks)
    assert {r["task"] for r in rows if r["group"] == "baseline"} == set(config.stage_tasks)  # the generator control
    assert all(0 <= r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] <= 1 for r in rows)
    assert all(r["gain_ci"][0] <= r["gain"] <= r["gain_ci"][1] for r in rows if r["method"] != "mean_adapter")
    start = {r["task"]: r["accuracy"] for r in rows if r["method"] == "coral_aligned"}
    for r in rows:  # every gain is over the env's starting adapter on the same questions
        if r["group"] != "policy":
            assert r["gain"] == pytest.approx(r["accuracy"] - start[r["task"]])
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    loop = [e for e in episodes if e["policy"] == "closed_loop"]
    assert loop and all(1 <= e["steps"] <= config.closed_loop_steps for e in loop)
    meta = json.loads((out / "run.json").read_text())
    assert set(meta["stage_seconds"]) == {"setup", "restem", "policies", "stages", "baselines"}
    # held-out tasks were never trained on: stage 1/2 saw the setup tasks only
    for stage in ("generator/all", "cvae/all/input"):
        trained = json.loads((out / "artifacts" / "tiny" / stage / "train_config.json").read_text())["tasks"]
        assert trained == config.setup_tasks


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
    with pytest.raises(ValueError, match="held-out tasks must not be trained on"):
        DemoConfig.from_preset("tiny", setup_tasks=["ctl_add_0", "ctl_add_3"])  # a stage task in setup
    with pytest.raises(ValueError, match="unknown policy row"):
        DemoConfig.from_preset("tiny", policies=["grpo"])
    cfg = DemoConfig.from_preset("cpu")
    assert cfg.eval_tasks == ["ctl_most_3", "ctl_key_3"] and cfg.stage_tasks == ["ctl_add_3", "ctl_sub_3"]
    assert cfg.setup_tasks[0].startswith("ctl_add") and cfg.train_tasks[0].startswith("ctl_most")
    with pytest.raises(ValueError, match="unknown baseline"):
        DemoConfig.from_preset("tiny", baselines=["reptile"])
    with pytest.raises(ValueError, match="--samples-per-task must be >= 1"):
        DemoConfig.from_preset("tiny", samples_per_task=0)
    cfg = DemoConfig.from_preset("cpu", data_dir="/somewhere")
    assert cfg.train_tasks == cfg.setup_tasks == ["arc_easy", "piqa", "boolq", "winogrande"]


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
    assert task_group("syn_add") == task_group("ctl_sub_3") == task_group("ctl_key_3") == "synthetic"


def test_policy_rows_average_test_correctness_and_pair_the_gain():
    episodes = [
        {"policy": "zero_shot", "task": "t", "test_correct": [1, 0, 0, 0], "test_correct_before": [0, 0, 0, 0]},
        {"policy": "zero_shot", "task": "t", "test_correct": [1, 1, 0, 0], "test_correct_before": [0, 0, 0, 0]},
        {"policy": "restem_iter2", "task": "t", "test_correct": [1, 1, 1, 0], "test_correct_before": [0, 0, 0, 0]},
    ]
    rows = policy_rows(episodes)
    assert [(r["method"], r["accuracy"], r["episodes"], r["gain"]) for r in rows] == [
        ("coral_policy_zero_shot", 0.375, 2, 0.375),
        ("coral_policy_restem_2", 0.75, 1, 0.75),
    ]
    assert rows[0]["n"] == 4 and rows[0]["ci95"][0] < 0.375 < rows[0]["ci95"][1]
    assert rows[1]["gain_ci"][0] > 0  # three of four questions fixed, none broken


def test_gain_table_marks_cis_that_exclude_zero():
    rows = [
        {"method": "base", "label": "Base", "task": "a", "gain": -0.2, "gain_ci": [-0.3, -0.1]},
        {"method": "coral_policy_random", "label": "Random", "task": "a", "gain": 0.01, "gain_ci": [-0.02, 0.04]},
    ]
    lines = gain_table(rows).splitlines()
    assert lines[2] == "| Base | -20.0 [-30.0, -10.0]* |" and lines[3] == "| Random | +1.0 [-2.0, +4.0] |"
    assert gain_table([{"method": "base", "task": "a", "accuracy": 0.5}]) is None


def test_oracle_picks_the_best_validation_entry_and_resumes(tmp_path):
    from fakes import BanditCoralEnv

    from coral_env.strategies import catalogue
    from trainers.compare import oracle_rules

    entries = catalogue(4)
    targets = {"a": entries[5], "b": "Latent"}
    made = []

    def make_env(tasks, **kwargs):
        made.append(kwargs)
        return BanditCoralEnv(targets)

    rules = oracle_rules(tmp_path, make_env, ["a", "b"], entries, progress=False)
    assert rules["a"] == entries[5]  # the one rewarded entry
    assert rules["b"] == next(s for s in entries if s.family == "Latent")  # the first of equal ones
    assert made == [{"strict_heldout": True, "eval_test": False}]  # validation only, strict held out
    assert oracle_rules(tmp_path, make_env, ["a", "b"], entries, progress=False) == rules and len(made) == 1


def test_demo_converts_every_model_before_any_stage(tmp_path, monkeypatch):
    # a conversion's memory peak must not add to a loaded model's, and a missing package fails first
    import coral_env.backend.models as models
    from coral_env.backend.models import ModelNotFoundError

    asked = []

    def missing(name):
        asked.append(name)
        raise ModelNotFoundError(f"{name} is not installed")

    monkeypatch.setattr(models, "resolve_model_path", missing)
    config = DemoConfig.from_preset("cpu", out=str(tmp_path / "run"), policy_model="qwen2.5-coder-0.5b-instruct")
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        run_demo(config)
    assert asked == ["smollm2-135m-instruct"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["demo_config.json"]  # no stage started
