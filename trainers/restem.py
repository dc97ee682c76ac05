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

from coral_env.config import documented

from .completion_logprobs import completion_positions_only
from .run_config import (
    POLICY_PRESETS,
    RESUMABLE_CHANGES,
    PolicyTrainingConfig,
    check_resume,
    llm_policy_factory,
    prepare_run,
    train_env_kwargs,
    write_contexts,
)

# torch, transformers, TRL and PEFT are imported where used: `coral --help` imports this module.


@documented
@dataclass
class RestemConfig(PolicyTrainingConfig):
    """Settings of a ReST^EM run; ``RestemConfig.from_preset(name, **overrides)`` fills the preset's defaults."""

    PRESET_VALUES = {
        "tiny": POLICY_PRESETS["tiny"]
        | dict(
            sft_dtype="fp32",
            iterations=1,
            samples_per_task=4,
            keep_per_task=2,
            max_new_tokens=32,
            max_steps=2,
        ),
        "cpu": POLICY_PRESETS["cpu"],  # the field defaults: K=6, 2 iterations, a few minutes of SFT per iteration
        "paper": POLICY_PRESETS["paper"]
        | dict(samples_per_task=20, keep_per_task=10, batch_size=8, num_train_epochs=3.0),
    }

    out: str = field(default="runs/restem", metadata={"help": "run folder (reused to resume)"})
    iterations: int = field(default=2, metadata={"help": "ReST^EM iterations (paper: 2)"})
    samples_per_task: int = field(default=6, metadata={"help": "K: replies sampled per training task (paper: 20)"})
    keep_per_task: int = field(default=3, metadata={"help": "cap on kept reward-1 samples per task (paper preset: 10)"})
    dedupe: bool = field(default=True, metadata={"help": "keep each canonical strategy once per task"})
    min_reward: float = field(default=1.0, metadata={"help": "keep samples whose reward is at least this"})
    restart_from_base: bool = field(
        default=True,
        metadata={"help": "fine-tune from the base model each iteration (paper); else continue the last adapter"},
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

    def __post_init__(self) -> None:
        self._check_policy_values()
        for key in ("iterations", "samples_per_task", "keep_per_task", "batch_size", "max_length"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.sft_dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"sft_dtype must be auto, bf16, fp16 or fp32, got {self.sft_dtype!r}")
        for key in ("learning_rate", "num_train_epochs"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use num_train_epochs) or >= 1, got {self.max_steps}")


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

    from tqdm.auto import tqdm

    from coral_env.allocator import release_free_memory
    from coral_env.backend.io import append_jsonl, atomic_write_json, read_json

    from .evaluation import evaluate_policy_on_tasks, summarize

    # ----- seeding, tasks, env, resume check -------------------------------------------------
    config, make_env = prepare_run(config, make_env)
    out = Path(config.out)
    check_resume(out / "config.json", config, RESUMABLE_CHANGES | {"iterations"})
    atomic_write_json(out / "config.json", config)

    logged = _logged_events(out / "log.jsonl")

    def log(event: str, **record) -> None:
        """Append an event once: a resumed run logs the events a kill cut off, and no others."""
        key = _event_key(event, record)
        if key not in logged:
            logged.add(key)
            append_jsonl(out / "log.jsonl", {"event": event, "time": time.time(), **record})

    make_policy = make_policy or llm_policy_factory(config)
    loaded: dict[str | None, Any] = {}  # adapter -> policy; one in memory at a time
    envs: dict[str, Any] = {}  # built on first use: a finished run needs none

    def policy_for(adapter: str | None):
        if adapter not in loaded:
            loaded.clear()
            # every context first (the writer is freed before a policy loads)
            write_contexts(env_for("eval"), *([env_for("train")] if config.iterations else []))
            release_free_memory()
            loaded[adapter] = make_policy(adapter)
        return loaded[adapter]

    def env_for(kind: str):
        if kind not in envs:
            envs[kind] = (
                make_env(config.train_tasks, **train_env_kwargs(config))  # scored on validation
                if kind == "train"
                else make_env(config.eval_tasks, strict_heldout=True)  # never trained on them
            )
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
            release_free_memory()
            start = adapter if not config.restart_from_base else None
            sft = finetune(config, records, target, start, iteration)
            release_free_memory()  # the trainer's model and optimizer, before the evaluation loads the policy
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
    from peft import PeftModel
    from trl import SFTConfig, SFTTrainer

    from coral_env.backend import load_model, resolve_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the Trainer moves the model there
    dtype = resolve_dtype(config.sft_dtype, device)
    model, tokenizer = load_model(config.policy_model, dtype=dtype)
    peft_config = None
    if start_adapter:
        model = PeftModel.from_pretrained(model, start_adapter, is_trainable=True)
    else:
        peft_config = config.lora_config(model.config.num_hidden_layers)
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
        with completion_positions_only():
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
