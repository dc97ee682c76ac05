"""ReST^EM for the Coral policy agent (CORAL appendix E.5; Singh et al., 2024), in one file.

Each iteration i = 1..N:

1. **E-step (sample).** For every training task, sample K replies from the current policy
   (the base LLM for i = 1, else the policy of iteration i-1), run each in ``Coral-v0`` as a
   one-step episode, and keep the replies with reward 1 (deduplicated by canonical strategy,
   at most ``keep_per_task`` per task).
2. **M-step (fine-tune).** Fine-tune a LoRA on prompt -> completion pairs (prompt: the
   policy's chat messages; completion: the canonical strategy JSON) with TRL's ``SFTTrainer``
   and completion-only loss, starting from the base model (``restart_from_base``, the
   paper's and ReST^EM's choice) or from the previous adapter. An iteration with no kept
   sample skips this step and says so; the policy stays what it was.
3. **Evaluate** the new policy on held-out tasks (success rate, metric gain, family choice).

Resumable: every task's samples, the adapter and the evaluation are written atomically under
``out/iter_<i>/``; a rerun skips whatever exists. ``out/log.jsonl`` records every stage.

    python -m trainers.restem --preset cpu --train-tasks arc_easy,piqa --eval-tasks arc_challenge --out runs/restem
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from coral_env.config import Presets, documented

# torch, transformers, TRL and PEFT are imported where used: `coral --help` imports this module.

TINY_TASKS = (["syn_add", "syn_compare"], ["syn_parity"])
CPU_TASKS = (["arc_easy", "piqa", "boolq", "winogrande"], ["arc_challenge", "hellaswag"])


@documented
@dataclass
class RestemConfig(Presets):
    """Settings of a ReST^EM run; ``RestemConfig.from_preset(name, **overrides)`` fills the preset's defaults."""

    PRESET_VALUES = {
        "tiny": dict(
            policy_model="tiny",
            policy_dtype="fp32",
            sft_dtype="fp32",
            train_tasks=TINY_TASKS[0],
            eval_tasks=TINY_TASKS[1],
            auto_setup=True,
            iterations=1,
            samples_per_task=4,
            keep_per_task=2,
            max_new_tokens=32,
            lora_r=2,
            lora_alpha=4,
            max_steps=2,
            eval_samples_per_task=2,
        ),
        "cpu": {},  # the field defaults: K=6, 2 iterations, a few minutes of SFT per iteration
        "paper": dict(
            samples_per_task=20,
            keep_per_task=10,
            batch_size=8,
            num_train_epochs=3.0,
            eval_samples_per_task=20,
            lora_targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    }

    preset: str = field(default="cpu", metadata={"help": "scale preset of the env and defaults: tiny, cpu, paper"})
    out: str = field(default="runs/restem", metadata={"help": "run folder (reused to resume)"})
    train_tasks: list[str] = field(
        default_factory=lambda: list(CPU_TASKS[0]), metadata={"help": "tasks the policy samples and trains on"}
    )
    eval_tasks: list[str] = field(
        default_factory=lambda: list(CPU_TASKS[1]), metadata={"help": "held-out tasks the policy is evaluated on"}
    )
    policy_model: str | None = field(
        default=None, metadata={"help": "policy LLM (load_model name); default: policies.llm.default_policy_model()"}
    )
    policy_dtype: str = field(default="auto", metadata={"help": "dtype of the sampling policy: auto, bf16, fp32"})
    artifacts: str | None = field(default=None, metadata={"help": "env artifacts root (coral setup --artifacts)"})
    data_dir: str | None = field(default=None, metadata={"help": "benchmark JSONL folder"})
    reward_metric: str = field(default="auto", metadata={"help": "env reward metric"})
    auto_setup: bool = field(default=False, metadata={"help": "let the env run `coral setup` for missing artifacts"})
    iterations: int = field(default=2, metadata={"help": "ReST^EM iterations (paper: 2)"})
    samples_per_task: int = field(default=6, metadata={"help": "K: replies sampled per training task (paper: 20)"})
    keep_per_task: int = field(default=3, metadata={"help": "cap on kept reward-1 samples per task (paper preset: 10)"})
    dedupe: bool = field(default=True, metadata={"help": "keep each canonical strategy once per task"})
    min_reward: float = field(default=1.0, metadata={"help": "keep samples whose reward is at least this"})
    restart_from_base: bool = field(
        default=True,
        metadata={"help": "fine-tune from the base model each iteration (paper); else continue the last adapter"},
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (paper: 1.0)"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling (paper: 0.9)"})
    top_k: int = field(default=50, metadata={"help": "top-k sampling (paper: 50)"})
    max_new_tokens: int = field(default=96, metadata={"help": "reply length bound"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank of the policy adapter"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], metadata={"help": "modules that get LoRA"}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "SFT learning rate"})
    num_train_epochs: float = field(default=2.0, metadata={"help": "SFT epochs over the kept samples"})
    max_steps: int = field(default=-1, metadata={"help": "SFT optimizer steps; overrides epochs when > 0"})
    batch_size: int = field(default=2, metadata={"help": "SFT sequences per step"})
    max_length: int = field(default=2048, metadata={"help": "SFT max tokens per sequence (prompt + completion)"})
    sft_dtype: str = field(
        default="auto",
        metadata={"help": "dtype of the base model during SFT: auto (bf16 where the hardware has it), bf16, fp32"},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory in SFT"})
    eval_base: bool = field(default=True, metadata={"help": "also evaluate the zero-shot base policy (iter_0)"})
    eval_samples_per_task: int = field(default=4, metadata={"help": "episodes per held-out task"})
    eval_test: bool = field(default=False, metadata={"help": "also report test accuracy in the evaluation rows"})
    seed: int = field(default=0, metadata={"help": "seed of the env splits, sampling and SFT"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads"})
    report_to: str = field(
        default="none",
        metadata={
            "help": "none or tensorboard (TRL's report_to for the SFT steps; logs under <out>/iter_<i>/tensorboard)"
        },
    )
    workers: int = field(
        default=1,
        metadata={
            "help": "Ray actors that score episodes (sampling and held-out evaluation), one env runtime each; "
            '1 = in this process (needs pip install -e ".[ray]" when > 1)'
        },
    )
    ray_address: str | None = field(
        default=None,
        metadata={"help": "join this Ray cluster (ray.init(address=...)); default: a local Ray when --workers > 1"},
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        for key in ("iterations", "samples_per_task", "keep_per_task", "batch_size", "eval_samples_per_task"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.train_tasks or not self.eval_tasks:
            raise ValueError("train_tasks and eval_tasks must each name at least one task")
        if leak := set(self.train_tasks) & set(self.eval_tasks):
            raise ValueError(f"held-out tasks must not be trained on: {sorted(leak)}")
        self._check_values()

    def _check_values(self) -> None:
        """Every setting a later stage would reject, checked now: before any model loads and
        before ``config.json`` is written (a corrected rerun would otherwise be refused)."""
        from policies.llm import check_sampling

        check_sampling(self.temperature, self.top_p, self.top_k, self.max_new_tokens)
        for key in ("policy_dtype", "sft_dtype"):
            if getattr(self, key) not in ("auto", "bf16", "fp16", "fp32"):
                raise ValueError(f"{key} must be auto, bf16, fp16 or fp32, got {getattr(self, key)!r}")
        for key in ("lora_r", "lora_alpha", "max_length"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        for key in ("learning_rate", "num_train_epochs"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use num_train_epochs) or >= 1, got {self.max_steps}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not self.lora_targets:
            raise ValueError("lora_targets must name at least one module (e.g. q_proj,v_proj)")
        if self.report_to not in ("none", "tensorboard"):
            raise ValueError(f"report_to must be one of none, tensorboard, got {self.report_to!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {self.workers!r}")


# Fields that may change between a run and its resumption.
RESUMABLE_CHANGES = {"iterations", "out", "threads", "progress", "report_to", "workers", "ray_address"}


def train_restem(
    config: RestemConfig,
    make_env: Callable[[list[str]], Any] | None = None,
    make_policy: Callable[[str | None], Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) ReST^EM; returns ``{"iterations": [...], "summaries": [...]}``.

    Args:
        make_env: ``(tasks, **env kwargs) -> env`` (default: ``Coral-v0`` with the config's env settings;
            the held-out env is built with ``strict_heldout=True``).
        make_policy: ``adapter folder | None -> policy`` with ``sample(context, task, n)`` and
            ``act(observation, info)`` (default: ``LLMPolicy`` on ``config.policy_model``).
    """
    import gc

    import torch
    from tqdm.auto import tqdm

    from coral_env.backend.io import append_jsonl, atomic_write_json, read_json

    from .evaluation import env_factory, evaluate_policy_on_tasks, summarize

    # ----- seeding, folders, resume check ---------------------------------------------------
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if config.policy_model is None:
        from policies.llm import default_policy_model

        config = dataclasses.replace(config, policy_model=default_policy_model())
    from coral_env.tasks import get_task, resolve_tasks

    # a task config path (*.json, *.yaml) registers its task; the run then uses its name
    config = dataclasses.replace(
        config, train_tasks=resolve_tasks(config.train_tasks), eval_tasks=resolve_tasks(config.eval_tasks)
    )
    if make_env is None:
        for task in config.train_tasks + config.eval_tasks:
            get_task(task)  # a misspelt task fails now, not after an hour of work
        make_env = env_factory(
            config.preset,
            config.artifacts,
            config.data_dir,
            config.seed,
            reward_metric=config.reward_metric,
            auto_setup=config.auto_setup,
            eval_test=config.eval_test,
            workers=config.workers,
            ray_address=config.ray_address,
        )
    out = Path(config.out)
    _check_resume(out / "config.json", config)
    atomic_write_json(out / "config.json", config)

    logged = _logged_events(out / "log.jsonl")

    def log(event: str, **record) -> None:
        """Append an event once: a resumed run logs the events a kill cut off, and no others."""
        key = _event_key(event, record)
        if key not in logged:
            logged.add(key)
            append_jsonl(out / "log.jsonl", {"event": event, "time": time.time(), **record})

    make_policy = make_policy or _llm_policy_factory(config)
    loaded: dict[str | None, Any] = {}  # adapter -> policy; one in memory at a time
    envs: dict[str, Any] = {}  # built on first use: a finished run needs none

    def policy_for(adapter: str | None):
        if adapter not in loaded:
            loaded.clear()
            gc.collect()
            loaded[adapter] = make_policy(adapter)
        return loaded[adapter]

    def env_for(kind: str):
        if kind not in envs:
            envs[kind] = (
                make_env(config.train_tasks) if kind == "train" else make_env(config.eval_tasks, strict_heldout=True)
            )  # never trained on them
        return envs[kind]

    def evaluate(folder: Path, adapter: str | None, label: str, iteration: int) -> dict:
        path = folder / "eval.json"
        if not path.exists():
            rows = evaluate_policy_on_tasks(
                env_for("eval"),
                policy_for(adapter),
                config.eval_tasks,
                config.eval_samples_per_task,
                name=label,
                seed=config.seed,
                progress=config.progress,
            )
            atomic_write_json(path, {"policy": label, "adapter": adapter, "rows": rows, "summary": summarize(rows)[0]})
        evaluation = read_json(path, _redo(path))
        log("eval", iteration=iteration, policy=label, summary=_brief(evaluation["summary"]))
        return evaluation

    results, summaries = [], []
    if config.eval_base:
        summaries.append(evaluate(out / "iter_0", None, "zero_shot", 0)["summary"])
    adapter: str | None = None  # the current policy: base model + this adapter

    for iteration in range(1, config.iterations + 1):
        folder = out / f"iter_{iteration}"
        marker = folder / "iteration.json"
        if marker.exists():
            done = read_json(marker, _redo(folder))
            adapter = done["policy_adapter"]
            log("iteration", **done)
            results.append(done)
            summaries.append(read_json(folder / "eval.json", _redo(folder))["summary"])
            continue

        # ----- 1. E-step: sample K replies per training task, score them, keep the winners ----
        bar = tqdm(
            total=len(config.train_tasks) * config.samples_per_task,
            desc=f"iter {iteration} sample",
            disable=not config.progress,
        )
        kept: dict[str, list[dict]] = {}
        contexts: dict[str, str] = {}
        for task in config.train_tasks:
            samples = _sample_task(
                folder / "samples" / f"{task}.json",
                task,
                env_for("train"),
                lambda: policy_for(adapter),
                config,
                bar,
                iteration,
            )
            kept[task] = keep_rewarded(samples["results"], config.keep_per_task, config.dedupe, config.min_reward)
            contexts[task] = samples["context"]
            log(
                "samples",
                iteration=iteration,
                task=task,
                sampled=len(samples["results"]),
                rewarded=sum(r["reward"] >= config.min_reward for r in samples["results"]),
                valid=sum(r["valid"] for r in samples["results"]),
                kept=len(kept[task]),
            )
        bar.close()
        records = [
            {"task": t, **sft_example(contexts[t], t, r["strategy"])} for t in config.train_tasks for r in kept[t]
        ]
        atomic_write_json(folder / "dataset.json", records)

        # ----- 2. M-step: fine-tune a LoRA on the kept samples (skip if none) ----------------
        target = folder / "adapter"
        if not records:
            sft = {"skipped": True, "reason": "no sample reached the reward threshold; policy unchanged"}
            log("sft_skipped", iteration=iteration, reason=sft["reason"])
        elif (target / "coral_policy.json").exists():
            sft = read_json(target / "coral_policy.json", _redo(target))["sft"]
        else:
            loaded.clear()  # free the sampling model before training
            start = adapter if not config.restart_from_base else None
            sft = finetune(config, records, target, start, iteration)
        if records:
            log("sft", iteration=iteration, **sft)
        if records:
            adapter = str(target)

        # ----- 3. evaluate the iteration's policy on held-out tasks ---------------------------
        evaluation = evaluate(folder, adapter, f"restem_iter{iteration}", iteration)
        summaries.append(evaluation["summary"])
        result = {
            "iteration": iteration,
            "policy_adapter": adapter,
            "sft": sft,
            "kept": {t: len(v) for t, v in kept.items()},
            "eval": _brief(evaluation["summary"]),
        }
        atomic_write_json(marker, result)
        log("iteration", **result)
        results.append(result)

    return {"iterations": results, "summaries": summaries}


def evaluation_rows(out: str | Path) -> list[dict]:
    """Every held-out evaluation row a run folder holds, iteration 0 (zero-shot) first, in
    numeric iteration order."""
    folders = sorted(Path(out).glob("iter_*"), key=lambda p: int(p.name.split("_")[1]))
    return [
        row for f in folders if (f / "eval.json").exists() for row in json.loads((f / "eval.json").read_text())["rows"]
    ]


# ----- E-step helpers ------------------------------------------------------------------------------


def _sample_task(
    path: Path, task: str, env, get_policy: Callable[[], Any], config: RestemConfig, bar, iteration: int
) -> dict:
    """Sample K replies for ``task`` and score each in a one-step episode; resumes from ``path``."""
    from coral_env.backend.io import atomic_write_json, read_json
    from coral_env.env.reward import reward_of
    from coral_env.seeding import derived_seed

    state = read_json(path, _redo(path)) if path.exists() else None
    if state is not None and state["complete"]:
        bar.update(len(state["results"]))
        return state
    if state is None:  # sample all K at once; the replies are saved before any is scored
        obs, _ = env.reset(options={"task": task})
        # Seeded by its place in the run, so a resumed run (which skips earlier sampling) draws the same.
        replies = get_policy().sample(
            obs["context"],
            task,
            config.samples_per_task,
            seed=derived_seed(config.seed, "restem-sample", iteration, task),
        )
        state = {"task": task, "context": obs["context"], "replies": list(replies), "results": [], "complete": False}
        atomic_write_json(path, state)
    bar.update(len(state["results"]))
    if hasattr(env, "score"):  # an EpisodePool: score the remaining replies on its Ray actors at once
        start = len(state["results"])
        remaining = state["replies"][start:]
        for index, (reply, (reward, info)) in enumerate(
            zip(remaining, env.score([(task, r) for r in remaining])), start=start
        ):
            state["results"].append(_sample_result(index, reply, reward, info))
        bar.update(len(remaining))
    for index in range(len(state["results"]), len(state["replies"])):
        reply = state["replies"][index]
        reward, info = reward_of(reply, env, task)
        state["results"].append(_sample_result(index, reply, reward, info))
        atomic_write_json(path, state)
        bar.update(1)
    state["complete"] = True
    atomic_write_json(path, state)
    return state


def _sample_result(index: int, reply: str, reward: float, info: dict) -> dict:
    return {
        "index": index,
        "reply": reply,
        "action": info["action"],
        "valid": info["valid"],
        "strategy": info.get("strategy"),
        "reward": float(reward),
        "metric_before": info.get("metric_before"),
        "metric_after": info.get("metric_after"),
        "error": info.get("error"),
    }


def keep_rewarded(results: list[dict], cap: int, dedupe: bool = True, min_reward: float = 1.0) -> list[dict]:
    """The samples with reward >= ``min_reward``, in sampling order, each canonical strategy once
    (``dedupe``), at most ``cap``."""
    kept, seen = [], set()
    for r in results:
        if r["reward"] < min_reward or not r["valid"] or r["strategy"] is None:
            continue
        if dedupe and r["strategy"] in seen:
            continue
        seen.add(r["strategy"])
        kept.append(r)
        if len(kept) >= cap:
            break
    return kept


def sft_example(context: str, task: str, strategy_json: str) -> dict:
    """One conversational prompt -> completion pair: the policy's chat messages, then the
    strategy as the assistant's reply (readable canonical JSON, "family" first)."""
    from coral_env.strategies import parse_strategy, policy_prompt

    reply = parse_strategy(strategy_json).strategy.to_json()
    return {"prompt": policy_prompt(context, task), "completion": [{"role": "assistant", "content": reply}]}


# ----- M-step ---------------------------------------------------------------------------------------


def build_sft_trainer(config: RestemConfig, records: list[dict], output_dir: Path, start_adapter: str | None = None):
    """TRL ``SFTTrainer`` over conversational prompt -> completion records, completion-only loss,
    with a fresh LoRA on the base model, or continuing ``start_adapter``."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from trl import SFTConfig, SFTTrainer

    from coral_env.backend import load_model, resolve_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the Trainer moves the model there
    dtype = resolve_dtype(config.sft_dtype, device)
    model, tokenizer = load_model(config.policy_model, dtype=dtype)
    peft_config = None
    if start_adapter:
        model = PeftModel.from_pretrained(model, start_adapter, is_trainable=True)
    else:
        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_targets),
            task_type="CAUSAL_LM",
        )
    longest = max(
        len(
            tokenizer(
                tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False), add_special_tokens=False
            )["input_ids"]
        )
        for r in records
    )
    if longest > config.max_length:  # TRL keeps the start: the completion would be cut away
        raise ValueError(f"an SFT example has {longest} tokens > max_length={config.max_length}; raise --max-length")
    args = SFTConfig(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
        completion_only_loss=True,
        bf16=dtype == torch.bfloat16,
        gradient_checkpointing=config.gradient_checkpointing,
        logging_steps=1,
        save_strategy="no",
        report_to=config.report_to,
        seed=config.seed,
        disable_tqdm=not config.progress,
        use_cpu=device == "cpu",
    )
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in records])
    return SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )


def finetune(
    config: RestemConfig, records: list[dict], target: Path, start_adapter: str | None, iteration: int
) -> dict[str, Any]:
    """SFT a LoRA on ``records``; the PEFT adapter folder is written with ``atomic_dir`` (it
    appears complete or not at all; the trainer's scratch folder sits beside it). Returns
    training statistics."""
    from coral_env.backend.io import atomic_dir, to_json

    from .reporting import check_report_to, tensorboard_dir

    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.sft-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    with (
        atomic_dir(target, clean_stale=True) as adapter_dir,
        tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.sft-") as scratch,
    ):
        check_report_to(config.report_to)
        logs = target.parent / "tensorboard" if config.report_to == "tensorboard" else None
        with tensorboard_dir(logs):  # the trainer's own folder is scratch
            trainer = build_sft_trainer(
                dataclasses.replace(config, seed=config.seed + iteration),
                records,
                Path(scratch) / "trainer",
                start_adapter,
            )
        started = time.perf_counter()
        output = trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        sft = {
            "examples": len(records),
            "steps": int(output.global_step),
            "train_loss": float(output.training_loss),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "seconds": time.perf_counter() - started,
            "init": start_adapter or "base",
        }
        trainer.model.save_pretrained(str(adapter_dir))
        (adapter_dir / "coral_policy.json").write_text(
            to_json({"base_model": config.policy_model, "iteration": iteration, "sft": sft})
        )
    return sft


# ----- policies, resume, small helpers ----------------------------------------------------------


def _llm_policy_factory(config: RestemConfig) -> Callable[[str | None], Any]:
    def make(adapter: str | None):
        import torch

        from policies.llm import LLMPolicy, SamplingConfig

        sampling = SamplingConfig(
            temperature=config.temperature, top_p=config.top_p, top_k=config.top_k, max_new_tokens=config.max_new_tokens
        )
        policy = LLMPolicy(
            config.policy_model,
            adapter=adapter,
            sampling=sampling,
            seed=config.seed,
            dtype=config.policy_dtype,
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
        policy.name = "llm" if adapter is None else f"llm+{Path(adapter).parent.name}"
        return policy

    return make


def _redo(path: Path) -> str:
    """The fix for an unreadable file of a run folder."""
    return f"delete {path} and re-run the same command (that step is redone)"


def _event_key(event: str, record: dict) -> str:
    return json.dumps([event, record.get("iteration"), record.get("task")])


def _logged_events(path: Path) -> set[str]:
    """Keys of the events ``log.jsonl`` already holds (a line cut by a kill is ignored)."""
    keys = set()
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            keys.add(_event_key(row.get("event"), row))
    return keys


def _check_resume(path: Path, config: RestemConfig) -> None:
    if not path.exists():
        return
    from coral_env.backend.io import read_json

    old = read_json(path, f"delete {path.parent} or choose another --out")
    new = json.loads(json.dumps(dataclasses.asdict(config)))
    changed = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
    if changed:
        raise ValueError(
            f"{path.parent} holds a run with different settings ({', '.join(changed)}); "
            "resume it with the same settings or choose another --out"
        )


def _brief(summary: dict) -> dict:
    keys = (
        "n",
        "success_rate",
        "success_ci",
        "mean_metric_gain",
        "metric_gain_ci",
        "mean_accuracy_gain",
        "valid_rate",
        "families",
    )
    return {k: summary[k] for k in keys}


# ----- command line ---------------------------------------------------------------------------------


def command(config: RestemConfig) -> int:
    """``coral restem``: train, then print the comparison and family tables."""
    from .evaluation import comparison_table, family_table

    result = train_restem(config)
    print(comparison_table(result["summaries"]))
    print()
    print(family_table(result["summaries"]))
    for it in result["iterations"]:
        print(
            f"iteration {it['iteration']}: kept {json.dumps(it['kept'])}; sft "
            f"{'skipped' if it['sft'].get('skipped') else str(it['sft'].get('steps')) + ' steps'}; "
            f"policy {it['policy_adapter']}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m trainers.restem --preset cpu --train-tasks a,b --eval-tasks c --out DIR``."""
    from coral_env.config import run_config_command

    from .commands import TRAINERS

    return run_config_command(RestemConfig, command, argv, "python -m trainers.restem", TRAINERS["restem"].description)


if __name__ == "__main__":
    sys.exit(main())
