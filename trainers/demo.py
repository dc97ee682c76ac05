"""``coral demo``: the whole pipeline end to end, then the report.

    collect checkpoints -> train the generator -> train the CVAE            (coral_env.setup)
    -> env episodes with the zero-shot LLM policy -> one ReST^EM iteration  (trainers.restem)
    -> baselines (No Meta-Train, Union, MAML-en-LLM FO, ABMLL FO)          (coral_env.setup.baselines)
    -> test accuracy of base / generator / +alignment / +policy per held-out task
    -> report.md + figures                                                  (trainers.report)

By default it runs offline on built-in synthetic tasks with the packaged model, at the cpu
preset with demo-sized schedules (minutes on a 2-core CPU). ``--data-dir`` (or real task
names) switches it to the benchmarks. Every stage resumes: run the same command again after an
interruption and finished work is reused.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_env.config import Presets, documented

DEMO_TASKS = (["syn_add", "syn_compare", "syn_sequence"], ["syn_parity"])
BENCHMARK_TASKS = (["arc_easy", "piqa", "boolq", "winogrande"], ["arc_challenge", "hellaswag", "social_i_qa"])


@documented
@dataclass
class DemoConfig(Presets):
    """Settings of ``coral demo``; ``DemoConfig.from_preset(name, **overrides)`` fills the preset's defaults."""

    PRESET_VALUES = {
        "tiny": dict(
            collect_steps=7,
            generator_steps=0,
            cvae_steps=0,
            samples_per_task=2,
            eval_samples_per_task=1,
            baseline_meta_steps=2,
            baseline_finetune_steps=2,
        ),
        "cpu": {},
        "paper": dict(
            collect_steps=125,
            generator_steps=0,
            cvae_steps=0,
            samples_per_task=20,
            iterations=2,
            eval_samples_per_task=20,
            baseline_meta_steps=300,
            baseline_finetune_steps=75,
        ),
    }

    preset: str = field(default="cpu", metadata={"help": "scale preset: tiny (tests), cpu, paper"})
    out: str = field(default="runs/demo", metadata={"help": "run folder (reused to resume)"})
    artifacts: str | None = field(default=None, metadata={"help": "stage-1/2 artifacts root (default: OUT/artifacts)"})
    data_dir: str | None = field(
        default=None, metadata={"help": "benchmark JSONL folder; given, the default tasks become the real benchmarks"}
    )
    train_tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "tasks the generator, CVAE, policy and baselines train on (default: three synthetic "
            "tasks; with --data-dir: arc_easy,piqa,boolq,winogrande)"
        },
    )
    eval_tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "held-out tasks of the report (default: syn_parity; with --data-dir: arc_challenge,hellaswag,"
            "social_i_qa)"
        },
    )
    skip_setup: bool = field(
        default=False,
        metadata={
            "help": "use the artifacts as they are (e.g. the leave-one-out generators and CVAEs of `coral setup "
            "--holdout T`) instead of training stage 1/2 on the train tasks"
        },
    )
    collect_steps: int = field(
        default=24, metadata={"help": "checkpoint-collection steps per task (2/3 at the phase-1 rate, 1/3 at phase 2)"}
    )
    generator_steps: int = field(default=120, metadata={"help": "generator training steps"})
    cvae_steps: int = field(default=40, metadata={"help": "CVAE meta-steps"})
    samples_per_task: int = field(default=4, metadata={"help": "ReST^EM K: policy samples per training task"})
    iterations: int = field(default=1, metadata={"help": "ReST^EM iterations"})
    eval_samples_per_task: int = field(default=3, metadata={"help": "policy episodes per held-out task"})
    baselines: list[str] = field(
        default_factory=lambda: ["no_meta_lora", "union_lora", "maml_fo", "abmll_fo"],
        metadata={"help": "baseline methods to run (a subset of no_meta_lora, union_lora, maml_fo, abmll_fo)"},
    )
    baseline_meta_steps: int = field(default=20, metadata={"help": "meta-training steps of the baselines"})
    baseline_finetune_steps: int = field(default=12, metadata={"help": "target-support fine-tuning steps"})
    policy_model: str | None = field(
        default=None, metadata={"help": "policy LLM (default: policies.llm.default_policy_model())"}
    )
    seed: int = field(
        default=0,
        metadata={"help": "seed of sampling and training (splits use split seed 0, the one `coral setup` records)"},
    )
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        from coral_env.setup.baselines import METHODS

        for key in (
            "collect_steps",
            "samples_per_task",
            "iterations",
            "eval_samples_per_task",
            "baseline_meta_steps",
            "baseline_finetune_steps",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}")
        if self.collect_steps < 3:
            raise ValueError(f"--collect-steps must be >= 3 (two phases), got {self.collect_steps}")
        for key in ("generator_steps", "cvae_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 0 (0: the preset's), got {getattr(self, key)}")
        unknown = [m for m in self.baselines if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(METHODS)}")
        default = BENCHMARK_TASKS if self.data_dir else DEMO_TASKS
        if self.preset == "tiny" and not self.data_dir:
            default = (["syn_add", "syn_compare"], ["syn_parity"])
        self.train_tasks = list(self.train_tasks or default[0])
        self.eval_tasks = list(self.eval_tasks or default[1])
        if leak := set(self.train_tasks) & set(self.eval_tasks):
            raise ValueError(f"held-out tasks must not be trained on: {sorted(leak)}")

    @property
    def artifacts_root(self) -> str:
        return self.artifacts or str(Path(self.out) / "artifacts")


def run_demo(config: DemoConfig) -> Path:
    """Run (or resume) the demo; returns the path of ``report.md``."""
    import torch

    from coral_env.backend.io import atomic_write_json
    from coral_env.tasks import get_task, resolve_tasks

    # config paths register their tasks; a misspelt task fails before any work
    config = dataclasses.replace(
        config, train_tasks=resolve_tasks(config.train_tasks), eval_tasks=resolve_tasks(config.eval_tasks)
    )
    for task in config.train_tasks + config.eval_tasks:
        get_task(task)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "demo_config.json", config)
    began = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str):
        timings[name] = time.perf_counter()
        print(f"[coral demo] {name} ...", file=sys.stderr, flush=True)

    def done(name: str):
        timings[name] = round(time.perf_counter() - timings[name], 1)

    # ----- 1. stage 1/2: collection, generator, CVAE (trained without the held-out tasks) ------
    stage("setup")
    if not config.skip_setup:
        _setup(config)
    done("setup")

    # ----- 2+3. zero-shot LLM policy episodes and one ReST^EM iteration -----------------------
    stage("restem")
    restem = _restem(config)
    done("restem")

    # ----- 4. the table: pipeline stages and baselines on the held-out tasks' test split ------
    stage("pipeline")
    runtime = _runtime(config)
    rows = pipeline_rows(runtime, config.eval_tasks)
    rows += policy_rows(restem["episodes"], {t: len(runtime.splits(t).test) for t in config.eval_tasks})
    done("pipeline")
    if config.baselines:
        stage("baselines")
        rows += baseline_rows(runtime, config)
        done("baselines")

    # ----- 5. report ---------------------------------------------------------------------------
    from .report import EPISODES_FILE, METHODS_FILE, write_report

    _write_jsonl(out / METHODS_FILE, rows)
    _write_jsonl(out / EPISODES_FILE, restem["episodes"])
    stage_schedule = (
        ""
        if config.skip_setup
        else f"schedules: collection {config.collect_steps} steps/task, generator "
        f"{config.generator_steps or 'preset'} steps, CVAE {config.cvae_steps or 'preset'} meta-steps; "
    )
    artifacts_note = (
        f"existing ones in {config.artifacts_root} (for each task the generator and CVAE "
        "trained without it where one exists, else the ones trained on all setup tasks)"
        if config.skip_setup
        else "trained by this run on the train tasks only"
    )
    notes = [
        f"Stage 1/2 artifacts: {artifacts_note}.",
        f"Train tasks: {', '.join(config.train_tasks)}; held-out: {', '.join(config.eval_tasks)}. "
        f"Preset {config.preset}; {stage_schedule}ReST^EM K={config.samples_per_task} x "
        f"{config.iterations} iteration(s), {config.eval_samples_per_task} policy episodes per held-out task.",
        "+policy rows: the mean test accuracy after the strategies the policy sampled in its held-out "
        "episodes (its CI is the test set's, not the policy's sampling spread).",
        "MAML-en-LLM and ABMLL are first-order variants (no second derivatives; ABMLL keeps its "
        "Gaussian prior over LoRA weights but not its amortised variational objective); see "
        "coral_env/setup/baselines.py.",
        f"Stage times (s): {json.dumps(timings)}.",
    ]
    minutes = round((time.perf_counter() - began) / 60, 1)
    atomic_write_json(
        out / "run.json",
        {
            "command": "coral " + " ".join(sys.argv[1:]) if sys.argv and "coral" in sys.argv[0] else "coral demo",
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "minutes": minutes,
            "stage_seconds": timings,
            "config": dataclasses.asdict(config),
            "notes": notes,
        },
    )
    return write_report(out, title="Coral demo report" if not config.data_dir else "Coral results", notes=notes)


def _setup(config: DemoConfig) -> None:
    from coral_env.setup.pipeline import run_setup

    phase2 = max(1, config.collect_steps // 3)
    collection = dict(phase1_steps=config.collect_steps - phase2, phase2_steps=phase2)
    generator = {"steps": config.generator_steps} if config.generator_steps else {}
    if config.generator_steps:
        generator |= {
            "save_every": max(1, config.generator_steps // 4),
            "warmup_steps": min(20, config.generator_steps // 5),
        }
    cvae = {"meta_steps": config.cvae_steps} if config.cvae_steps else {}
    if config.cvae_steps:
        cvae["save_every"] = max(1, config.cvae_steps // 4)
    run_setup(
        config.preset,
        config.artifacts_root,
        tasks=config.train_tasks,
        holdout=None,
        data_dir=config.data_dir,
        collection_overrides=collection,
        generator_overrides=generator,
        cvae_overrides=cvae,
        progress=config.progress,
    )


def _restem(config: DemoConfig) -> dict[str, Any]:
    from .restem import RestemConfig, evaluation_rows, train_restem

    restem_config = RestemConfig.from_preset(
        config.preset,
        out=str(Path(config.out) / "restem"),
        train_tasks=config.train_tasks,
        eval_tasks=config.eval_tasks,
        policy_model=config.policy_model,
        artifacts=config.artifacts_root,
        data_dir=config.data_dir,
        iterations=config.iterations,
        samples_per_task=config.samples_per_task,
        keep_per_task=max(1, config.samples_per_task // 2),
        eval_samples_per_task=config.eval_samples_per_task,
        eval_test=True,
        seed=config.seed,
        threads=config.threads,
        progress=config.progress,
    )
    result = train_restem(restem_config)
    return {"result": result, "episodes": evaluation_rows(restem_config.out)}


def _runtime(config: DemoConfig):
    from coral_env.env.runtime import CoralRuntime, EnvConfig

    return CoralRuntime.get(
        EnvConfig(preset=config.preset, artifacts=config.artifacts_root, data_dir=config.data_dir, seed=config.seed)
    )


def _metrics(result) -> dict[str, Any]:
    """Accuracy, n and Wilson 95% CI of an ``EvalResult``, as JSON-ready values."""
    lo, hi = result.ci95
    return {"accuracy": float(result.accuracy), "n": int(result.n), "ci95": [float(lo), float(hi)]}


def _result_row(method: str, label: str, task: str, result) -> dict[str, Any]:
    return {"method": method, "label": label, "task": task, **_metrics(result)}


def pipeline_rows(runtime, tasks: list[str]) -> list[dict[str, Any]]:
    """Test accuracy per task of the base model, the generated adapter and the aligned one;
    refuses (``HeldOutError``) a task whose generator or CVAE was trained on it."""
    import torch

    rows = []
    for task in tasks:
        runtime.require_heldout(task)  # strict: artifacts trained on a held-out task would flatter it
        state = runtime.task(task)
        generated = runtime.generator_for(task).generate_adapter([ex.question for ex in state.splits.support])
        stages = [
            ("base", "Base model (no adapter)", torch.zeros(runtime.layout.size)),
            ("coral_generator", "CORAL: generator", generated),
        ]
        if state.source == "generated+aligned":
            stages.append(("coral_aligned", "CORAL: generator + alignment", state.start_adapter))
        for method, label, adapter in stages:
            evaluation, _ = runtime.evaluate(state, adapter, None, split="test")
            rows.append(_result_row(method, label, task, evaluation.result))
    return rows


def policy_rows(episodes: list[dict], test_sizes: dict[str, int]) -> list[dict[str, Any]]:
    """+policy rows: per (policy, task), the mean test accuracy after the policy's strategies
    (``test_sizes``: task -> number of test examples, for the CI)."""
    from coral_env.backend.metrics import wilson_ci

    rows = []
    keys = dict.fromkeys((e["policy"], e["task"]) for e in episodes if e.get("test_accuracy") is not None)
    for policy, task in keys:
        mine = [e for e in episodes if (e["policy"], e["task"]) == (policy, task)]
        accs = [float(e["test_accuracy"]) for e in mine if e.get("test_accuracy") is not None]
        n = test_sizes[task]
        acc = sum(accs) / len(accs)
        if policy == "zero_shot":
            method, label = "coral_policy_zero_shot", "CORAL: + policy (zero-shot LLM)"
        else:
            iteration = policy.rsplit("iter", 1)[-1]
            method, label = f"coral_policy_restem_{iteration}", f"CORAL: + policy (ReST^EM iter {iteration})"
        rows.append(
            {
                "method": method,
                "label": label,
                "task": task,
                "accuracy": acc,
                "n": n,
                "ci95": list(wilson_ci(round(acc * n), n)),
                "episodes": len(accs),
            }
        )
    return rows


def baseline_rows(runtime, config: DemoConfig) -> list[dict[str, Any]]:
    from safetensors.torch import load_file

    from coral_env.setup.baselines import BaselineConfig, run_baselines

    init = load_file(str(runtime.paths.init_adapter))["adapter"]
    bconfig = BaselineConfig.preset(
        config.preset,
        meta_steps=config.baseline_meta_steps,
        finetune_steps=config.baseline_finetune_steps,
        seed=config.seed,
        save_every=max(1, config.baseline_meta_steps // 4),
    )

    def evaluate_test(task: str, adapter):
        evaluation, _ = runtime.evaluate(runtime.task(task), adapter, None, split="test")
        return _metrics(evaluation.result)

    with runtime.lock:  # the baselines train the runtime's model directly (runtime module docstring)
        snapshot = runtime.layout.get_flat()
        try:
            rows = run_baselines(
                runtime.model,
                runtime.tokenizer,
                runtime.layout,
                init,
                bconfig,
                targets=config.eval_tasks,
                train_tasks=config.train_tasks,
                out=Path(config.out) / "baselines",
                load_splits=runtime.splits,
                evaluate_test=evaluate_test,
                methods=config.baselines,
                progress=config.progress,
            )
        finally:
            runtime.layout.set_flat(snapshot)
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    from coral_env.backend.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def command(config: DemoConfig) -> int:
    """``coral demo``: run the pipeline, then print the report."""
    report = run_demo(config)
    print(report.read_text())
    print(f"report: {report} (figures beside it)")
    return 0


__all__ = ["DemoConfig", "command", "run_demo", "pipeline_rows", "policy_rows", "baseline_rows"]
