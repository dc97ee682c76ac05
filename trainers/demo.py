"""``coral demo``: the whole loop on the built-in control suite, then the report.

    collect checkpoints -> train the generator -> train the CVAE         (coral_env.setup)
    -> ReST^EM over the LLM policy: zero-shot, then each iteration       (trainers.restem)
    -> the other policies on the same held-out tasks: oracle, random,
       fixed rule, PPO, and ReST^EM's policy in DeGAML's closed loop     (trainers.compare, trainers.sb3)
    -> stage rows: base, mean adapter, generator, + CVAE                 (trainers.demo_rows)
    -> baselines (No Meta-Train, Union, MAML-en-LLM FO, ABMLL FO)
    -> report.md with the figures                                        (trainers.report)

By default it runs offline on the control suite (``coral tasks``; no download), where each
agent has something to learn: the generator and the CVAE train on the generator control's
training members (``ctl_add_*``/``ctl_sub_*``) and are scored on its held-out members; the
policies train on the policy controls' training members and are scored on ``ctl_most_3`` (SLOT
wins there) and ``ctl_key_3`` (test-time learning wins), which no stage ever saw. ``--data-dir``
switches to the benchmarks. Every stage resumes: run the same command again after an
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

from coral_env.config import REWARD_MODES, Presets, documented
from coral_env.tasks.controls import GENERATOR_CONTROL_HELDOUT, GENERATOR_CONTROL_TRAIN
from coral_env.tasks.policy_controls import POLICY_CONTROL_HELDOUT

CONTROL_SUITE = dict(
    setup_tasks=list(GENERATOR_CONTROL_TRAIN),
    train_tasks=["ctl_most_0", "ctl_most_1", "ctl_key_0", "ctl_key_1"],  # two of each family's three, for time
    eval_tasks=list(POLICY_CONTROL_HELDOUT),
    stage_tasks=list(GENERATOR_CONTROL_HELDOUT),
)
TINY_SUITE = dict(
    setup_tasks=["ctl_add_0", "ctl_sub_0"],
    train_tasks=["ctl_most_0", "ctl_key_0"],
    eval_tasks=["ctl_most_3"],
    stage_tasks=["ctl_add_3"],
)
BENCHMARK_SUITE = dict(
    train_tasks=["arc_easy", "piqa", "boolq", "winogrande"],
    eval_tasks=["arc_challenge", "hellaswag", "social_i_qa"],
    stage_tasks=[],
)
POLICIES = ("oracle", "random", "fixed_rule", "ppo", "closed_loop")
STAGES = ("setup", "restem", "policies", "stages", "baselines")


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
            ppo_timesteps=4,
            baseline_meta_steps=2,
            baseline_finetune_steps=2,
            validation_size=8,
        ),
        "cpu": {},
        "paper": dict(
            collect_steps=125,
            generator_steps=0,
            cvae_steps=0,
            samples_per_task=20,
            keep_per_task=10,
            eval_samples_per_task=20,
            ppo_timesteps=2000,
            baseline_meta_steps=300,
            baseline_finetune_steps=75,
            validation_size=0,
        ),
    }

    preset: str = field(default="cpu", metadata={"help": "scale preset: tiny (tests), cpu, paper"})
    out: str = field(default="runs/demo", metadata={"help": "run folder (reused to resume)"})
    artifacts: str | None = field(default=None, metadata={"help": "stage-1/2 artifacts root (default: OUT/artifacts)"})
    data_dir: str | None = field(
        default=None, metadata={"help": "benchmark JSONL folder; given, the default tasks become the real benchmarks"}
    )
    setup_tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "tasks stage 1/2 (collection, generator, CVAE) and the baselines train on (default: the "
            "generator control's training members ctl_add_0-2,ctl_sub_0-2; with --data-dir: --train-tasks)"
        },
    )
    train_tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "tasks the policies train on (default: two training members of each policy control, "
            "ctl_most_0,ctl_most_1,ctl_key_0,ctl_key_1; with --data-dir: arc_easy,piqa,boolq,winogrande)"
        },
    )
    eval_tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "held-out tasks of every row (default: ctl_most_3,ctl_key_3; with --data-dir: "
            "arc_challenge,hellaswag,social_i_qa)"
        },
    )
    stage_tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "more held-out tasks for the stage rows, and the tasks of the baseline rows (default: the "
            "generator control's held-out members ctl_add_3,ctl_sub_3; with --data-dir: none, and the baselines "
            "run on --eval-tasks)"
        },
    )
    skip_setup: bool = field(
        default=False,
        metadata={
            "help": "use the artifacts as they are (e.g. the leave-one-out generators and CVAEs of `coral setup "
            "--holdout T`) instead of training stage 1/2 on the setup tasks"
        },
    )
    collect_steps: int = field(
        default=24, metadata={"help": "checkpoint-collection steps per task (2/3 at the phase-1 rate, 1/3 at phase 2)"}
    )
    generator_steps: int = field(default=120, metadata={"help": "generator training steps (0: the preset's)"})
    cvae_steps: int = field(default=40, metadata={"help": "CVAE meta-steps (0: the preset's)"})
    reward_mode: str = field(
        default="significant",
        metadata={
            "help": "env reward the policies train on: significant (McNemar p < 0.05 on validation), binary, delta",
            "choices": REWARD_MODES,
        },
    )
    validation_size: int | None = field(
        default=100,
        metadata={
            "help": "every episode (training and held out) and the oracle's scan score the validation metric "
            "on the first N validation questions (0: all); the significant reward accounts for N, and the "
            "table is on the whole test split"
        },
    )
    samples_per_task: int = field(default=4, metadata={"help": "ReST^EM K: policy samples per training task"})
    keep_per_task: int = field(default=2, metadata={"help": "ReST^EM cap on kept samples per task"})
    iterations: int = field(default=2, metadata={"help": "ReST^EM iterations (paper: 2)"})
    sft_epochs: float = field(default=6.0, metadata={"help": "ReST^EM SFT epochs over the kept samples"})
    sft_lr: float = field(default=5e-4, metadata={"help": "ReST^EM SFT learning rate"})
    eval_samples_per_task: int = field(
        default=2, metadata={"help": "episodes per held-out task of the sampling policies (LLM, random)"}
    )
    policies: list[str] = field(
        default_factory=lambda: list(POLICIES),
        metadata={"help": f"policy rows besides ReST^EM's (a subset of {','.join(POLICIES)})"},
    )
    ppo_timesteps: int = field(default=32, metadata={"help": "PPO training env steps (one-step episodes)"})
    closed_loop_steps: int = field(default=3, metadata={"help": "strategies per closed-loop episode (DeGAML)"})
    closed_loop_episodes: int = field(default=1, metadata={"help": "closed-loop episodes per held-out task"})
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

        for key in ("collect_steps", "samples_per_task", "keep_per_task", "iterations", "eval_samples_per_task"):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}")
        for key in ("ppo_timesteps", "closed_loop_steps", "closed_loop_episodes", "baseline_meta_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}")
        if self.baseline_finetune_steps < 1:
            raise ValueError(f"--baseline-finetune-steps must be >= 1, got {self.baseline_finetune_steps}")
        if self.collect_steps < 3:
            raise ValueError(f"--collect-steps must be >= 3 (two phases), got {self.collect_steps}")
        for key in ("generator_steps", "cvae_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 0 (0: the preset's), got {getattr(self, key)}")
        if not isinstance(self.validation_size, int) or self.validation_size < 0:
            raise ValueError(f"--validation-size must be an int >= 0 (0: all), got {self.validation_size!r}")
        if not (self.sft_epochs > 0 and self.sft_lr > 0):
            raise ValueError(f"--sft-epochs and --sft-lr must be > 0, got {self.sft_epochs} and {self.sft_lr}")
        if unknown := [m for m in self.baselines if m not in METHODS]:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(METHODS)}")
        if unknown := [p for p in self.policies if p not in POLICIES]:
            raise ValueError(f"unknown policy row(s) {unknown}; choose from {', '.join(POLICIES)}")
        suite = BENCHMARK_SUITE if self.data_dir else TINY_SUITE if self.preset == "tiny" else CONTROL_SUITE
        for key, default in suite.items():
            if getattr(self, key) is None:
                setattr(self, key, list(default))
        if self.setup_tasks is None:
            self.setup_tasks = list(self.train_tasks)
        held_out = set(self.eval_tasks) | set(self.stage_tasks)
        if leak := held_out & (set(self.train_tasks) | set(self.setup_tasks)):
            raise ValueError(f"held-out tasks must not be trained on: {sorted(leak)}")

    @property
    def artifacts_root(self) -> str:
        return self.artifacts or str(Path(self.out) / "artifacts")


def _convert_models(config: DemoConfig) -> None:
    """Convert every packaged model the run loads (adapted model, context writer, policy) into
    the model cache, unless already there; a missing model package fails here, before any work."""
    from coral_env.backend.config import BackendConfig
    from coral_env.backend.models import resolve_model_path
    from coral_env.env.runtime import default_context_model

    from .demo_policies import restem_config

    env_model = BackendConfig.from_preset(config.preset).model
    policy_model = restem_config(config).policy_model
    for name in dict.fromkeys([env_model, default_context_model(config.preset, env_model), policy_model]):
        if name:
            resolve_model_path(name)


def run_demo(config: DemoConfig) -> Path:
    """Run (or resume) the demo; returns the path of ``report.md``."""
    import torch

    from coral_env.allocator import release_free_memory
    from coral_env.backend.io import atomic_write_json
    from coral_env.tasks import get_task, resolve_tasks

    from .demo_policies import final_adapter, other_policies, run_restem
    from .demo_rows import baseline_rows, mean_adapter, policy_rows, stage_rows
    from .report import EPISODES_FILE, METHODS_FILE, write_report

    # config paths register their tasks; a misspelt task fails before any work
    config = dataclasses.replace(
        config, **{k: resolve_tasks(getattr(config, k)) for k in ("setup_tasks", "train_tasks", "eval_tasks")}
    )
    config = dataclasses.replace(config, stage_tasks=resolve_tasks(config.stage_tasks))
    for task in dict.fromkeys(config.setup_tasks + config.train_tasks + config.eval_tasks + config.stage_tasks):
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
        release_free_memory()  # what the stage dropped does not stay under the next stage's peak

    _convert_models(config)  # first, while no model is loaded: a conversion's peak adds to none

    # ----- 1. stage 1/2: collection, generator, CVAE (trained on the setup tasks only) ---------
    stage("setup")
    if not config.skip_setup:
        _setup(config)
    done("setup")

    # ----- 2. ReST^EM: the zero-shot policy, then each iteration, on the held-out tasks --------
    stage("restem")
    episodes = run_restem(config)
    done("restem")

    # ----- 3. the other policies, same held-out tasks and episodes -------------------------------
    stage("policies")
    episodes += other_policies(config, final_adapter(config))
    done("policies")

    # ----- 4. the stage rows: what each agent adds, test split ---------------------------------
    stage("stages")
    runtime = _runtime(config)
    held_out = list(dict.fromkeys(config.eval_tasks + config.stage_tasks))
    mean = mean_adapter(runtime.paths, config.setup_tasks) if not config.skip_setup else None
    rows = stage_rows(runtime, held_out, mean) + policy_rows(episodes)
    done("stages")
    if config.baselines:
        stage("baselines")
        rows += baseline_rows(runtime, config, config.stage_tasks or config.eval_tasks)
        done("baselines")

    # ----- 5. report ---------------------------------------------------------------------------
    _write_jsonl(out / METHODS_FILE, rows)
    _write_jsonl(out / EPISODES_FILE, episodes)
    notes = _notes(config, timings)
    atomic_write_json(
        out / "run.json",
        {
            "command": "coral " + " ".join(sys.argv[1:]) if sys.argv and "coral" in sys.argv[0] else "coral demo",
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "minutes": round((time.perf_counter() - began) / 60, 1),
            "stage_seconds": timings,
            "config": dataclasses.asdict(config),
            "notes": notes,
        },
    )
    title = "Coral demo: the control suite" if not config.data_dir else "Coral results"
    return write_report(out, title=title, notes=notes)


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
        tasks=config.setup_tasks,
        holdout=None,
        data_dir=config.data_dir,
        collection_overrides=collection,
        generator_overrides=generator,
        cvae_overrides=cvae,
        progress=config.progress,
    )


def _runtime(config: DemoConfig):
    from coral_env.env.runtime import CoralRuntime, EnvConfig

    return CoralRuntime.get(
        EnvConfig(preset=config.preset, artifacts=config.artifacts_root, data_dir=config.data_dir, seed=config.seed)
    )


def _notes(config: DemoConfig, timings: dict) -> list[str]:
    schedules = (
        ""
        if config.skip_setup
        else f"Schedules: collection {config.collect_steps} steps/task, generator "
        f"{config.generator_steps or 'preset'} steps, CVAE {config.cvae_steps or 'preset'} meta-steps. "
    )
    artifacts = (
        f"existing ones in {config.artifacts_root} (for each task the generator and CVAE trained without it "
        "where one exists, else the ones trained on all setup tasks)"
        if config.skip_setup
        else f"trained by this run on {', '.join(config.setup_tasks)} only"
    )
    return [
        f"Stage 1/2 artifacts: {artifacts}. {schedules}",
        f"Policies trained on {', '.join(config.train_tasks)}; held out: {', '.join(config.eval_tasks)} "
        f"(stage and baseline rows also on {', '.join(config.stage_tasks) or 'nothing else'}). Preset "
        f"{config.preset}; reward `{config.reward_mode}` on the first {config.validation_size or 'all'} "
        "validation questions of every episode; the table is on the whole test split.",
        f"ReST^EM: K={config.samples_per_task} samples per training task, at most {config.keep_per_task} kept, "
        f"{config.iterations} iteration(s), SFT {config.sft_epochs:g} epochs at lr {config.sft_lr:g}. Sampling "
        f"policies (LLM, random) get {config.eval_samples_per_task} episodes per held-out task; the oracle, "
        f"fixed rule and PPO (greedy, {config.ppo_timesteps} training steps) one; the closed loop "
        f"{config.closed_loop_episodes} of up to {config.closed_loop_steps} strategies.",
        "Policy rows: test accuracy averaged over the policy's episodes; gain over the starting adapter with a "
        "two-level paired bootstrap CI (episodes, then questions; trainers/paired.py). Stage and baseline rows: "
        "gain with a paired bootstrap over the same questions.",
        "Oracle: per task, the catalogue entry with the best validation metric (the ceiling of a catalogue "
        "policy, chosen without reading test). Random: uniform over the same catalogue (PPO's action set).",
        "Baselines (the papers' LoRA methods, rows on "
        f"{', '.join(config.stage_tasks or config.eval_tasks)}): meta-trained on the setup tasks, then fine-tuned "
        "on the held-out task's labeled support examples, which CORAL's stages never read (they see its "
        "unlabeled questions only). MAML-en-LLM and ABMLL are first-order variants (no second derivatives; "
        "ABMLL keeps its Gaussian prior over LoRA weights but not its amortised variational objective); see "
        "coral_env/setup/baselines.py.",
        f"Stage times (s): {json.dumps(timings)}.",
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    from coral_env.backend.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def command(config: DemoConfig) -> int:
    """``coral demo``: run the pipeline, then print the report."""
    report = run_demo(config)
    print(report.read_text())
    print(f"report: {report} (figures beside it)")
    return 0


__all__ = ["DemoConfig", "CONTROL_SUITE", "command", "run_demo"]
