"""GRPO for the Coral LLM policy with TRL's ``GRPOTrainer`` and a LoRA (PEFT) on the policy.

Each training prompt is the policy's chat prompt for one training task (the task context from
``Coral-v0``). TRL samples ``num_generations`` completions per prompt; the reward function
(``EnvReward``) executes each completion in ``Coral-v0`` as a one-step episode: the first JSON
object of the reply is the action, and the reward is the env's (1 when the validation metric
improves; a reply without valid strategy JSON scores 0, as the env scores an invalid action).
Group-relative advantages then push the policy towards the rewarded strategies.

The trained adapter is evaluated on held-out tasks with the same loop as ReST^EM
(``trainers.evaluation``). Resumable: TRL checkpoints under ``out/trainer`` (``save_steps``)
are resumed from; the final adapter (``out/adapter``, a PEFT folder) and ``out/eval.json`` are
written atomically and skipped when present.

    coral grpo --preset cpu --train-tasks arc_easy,piqa --eval-tasks arc_challenge --out runs/grpo
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from coral_env.config import documented

from .completion_logprobs import completion_positions_only
from .reporting import check_report_to, tensorboard_dir
from .run_config import POLICY_PRESETS, PolicyTrainingConfig

# torch, TRL and PEFT are imported where used: `coral --help` imports this module.


@documented
@dataclass
class GrpoConfig(PolicyTrainingConfig):
    """Settings of a GRPO run; ``GrpoConfig.from_preset(name, **overrides)`` fills the preset's defaults."""

    PRESET_VALUES = {
        "tiny": POLICY_PRESETS["tiny"]
        | dict(train_dtype="fp32", max_steps=1, num_generations=2, prompts_per_task=2, max_new_tokens=16, save_steps=1),
        "cpu": POLICY_PRESETS["cpu"],  # the field defaults: 20 steps of 6 completions, about 10 minutes on 2 cores
        "paper": POLICY_PRESETS["paper"] | dict(max_steps=200, num_generations=8, prompts_per_step=2),
    }

    out: str = field(default="runs/grpo", metadata={"help": "run folder (reused to resume)"})
    train_dtype: str = field(default="auto", metadata={"help": "dtype of the policy during GRPO: auto, bf16, fp32"})
    max_steps: int = field(default=20, metadata={"help": "GRPO optimizer steps"})
    num_generations: int = field(default=6, metadata={"help": "completions per prompt (the GRPO group, >= 2)"})
    prompts_per_step: int = field(default=1, metadata={"help": "prompts (tasks) per optimizer step"})
    prompts_per_task: int = field(default=16, metadata={"help": "dataset rows per training task (sampled in turn)"})
    learning_rate: float = field(default=1e-5, metadata={"help": "GRPO learning rate"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient to the base policy (0: no reference model)"})
    save_steps: int = field(default=5, metadata={"help": "TRL checkpoint every N steps (resume point)"})

    def __post_init__(self) -> None:
        self._check_policy_values()
        for key in ("max_steps", "prompts_per_step", "prompts_per_task", "save_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (GRPO compares completions within a group), got {self.num_generations}"
            )
        if self.train_dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"train_dtype must be auto, bf16, fp16 or fp32, got {self.train_dtype!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


class EnvReward:
    """TRL reward function: each completion is executed in the env as a one-step episode.

    Called by ``GRPOTrainer`` as ``reward(prompts, completions, task=[...], **columns)``; returns
    the env's reward per completion, read and scored by ``coral_env.env.reward_of`` as ReST^EM
    does: the action is the reply's first JSON object (canonical when it validates), else the
    raw text, which the env scores 0 with an error. ``history`` keeps (task, action, reward).
    """

    __name__ = "coral_env_reward"  # TRL logs rewards under the function's name

    def __init__(self, env) -> None:
        self.env = env
        self.history: list[tuple[str, str, float]] = []

    def __call__(self, prompts, completions, task, **_) -> list[float]:
        from coral_env.env.reward import reward_of

        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        if hasattr(self.env, "score"):  # an EpisodePool: the group is scored on its Ray actors at once
            scored = self.env.score(list(zip(task, texts)))
        else:
            scored = [reward_of(text, self.env, name) for text, name in zip(texts, task)]
        rewards = []
        for name, (reward, info) in zip(task, scored):
            self.history.append((name, info["action"], float(reward)))
            rewards.append(float(reward))
        return rewards


def prompt_dataset(env, tasks: list[str], per_task: int):
    """Rows ``{"prompt": chat messages, "task": name}``, tasks interleaved, ``per_task`` each."""
    from datasets import Dataset

    from coral_env.strategies import policy_prompt

    prompts = {}
    for task in tasks:
        obs, _ = env.reset(options={"task": task})
        prompts[task] = policy_prompt(obs["context"], task)
    rows = [{"prompt": prompts[t], "task": t} for _ in range(per_task) for t in tasks]
    return Dataset.from_list(rows)


def build_grpo_trainer(config: GrpoConfig, env, output_dir: Path, reward: EnvReward | None = None):
    """TRL ``GRPOTrainer`` on the policy model with a fresh LoRA; rewards from ``env``."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from coral_env.backend import load_model, resolve_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = resolve_dtype(config.train_dtype, device)
    model, tokenizer = load_model(config.policy_model, dtype=dtype)
    tokenizer.padding_side = "left"  # GRPO generates from left-padded prompts
    peft_config = config.lora_config(model.config.num_hidden_layers)
    args = GRPOConfig(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.num_generations * config.prompts_per_step,
        num_generations=config.num_generations,
        max_completion_length=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        beta=config.beta,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        report_to=config.report_to,
        seed=config.seed,
        bf16=dtype == torch.bfloat16,
        use_cpu=device == "cpu",
        disable_tqdm=not config.progress,
        shuffle_dataset=False,
    )
    dataset = prompt_dataset(env, config.train_tasks, config.prompts_per_task)
    return GRPOTrainer(
        model=model,
        reward_funcs=[reward or EnvReward(env)],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def train_grpo(
    config: GrpoConfig,
    make_env: Callable[[list[str]], Any] | None = None,
    make_policy: Callable[[str | None], Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) GRPO, then evaluate on held-out tasks.

    Returns ``{"adapter", "train", "summaries", "rows"}``; ``train`` has steps, seconds, the
    reward log and how many env episodes scored completions.
    """
    from coral_env.backend.io import append_jsonl, atomic_write_json

    from .evaluation import evaluate_policy_on_tasks, summarize
    from .run_config import (
        RESUMABLE_CHANGES,
        check_resume,
        llm_policy_factory,
        prepare_run,
        train_env_kwargs,
        write_contexts,
    )

    config, make_env = prepare_run(config, make_env)
    out = Path(config.out)
    check_resume(out / "config.json", config, RESUMABLE_CHANGES | {"max_steps"})
    atomic_write_json(out / "config.json", config)

    def log(event: str, **record) -> None:
        append_jsonl(out / "log.jsonl", {"event": event, "time": time.time(), **record})

    # ----- train (resuming TRL's last checkpoint), unless the final adapter exists ------------
    adapter = out / "adapter"
    done = adapter / "coral_policy.json"
    if done.exists() and json.loads(done.read_text())["train"]["steps"] >= config.max_steps:
        train = json.loads(done.read_text())["train"]
    else:  # a new run, a killed one, or a larger --max-steps: continue from TRL's last checkpoint
        env = make_env(config.train_tasks, **train_env_kwargs(config))  # rewards need validation only
        write_contexts(env)  # before the policy model loads
        train = _train(config, env, adapter)
        log("train", **{k: v for k, v in train.items() if k != "log_history"})

    # ----- evaluate on held-out tasks, as ReST^EM does ----------------------------------------
    make_policy = make_policy or llm_policy_factory(config)
    env = None
    summaries, rows = [], []
    for label, policy_adapter, path in (
        ("zero_shot", None, out / "eval_base.json"),
        ("grpo", str(adapter), out / "eval.json"),
    ):
        if label == "zero_shot" and not config.eval_base:
            continue
        stale = label == "grpo" and path.exists() and json.loads(path.read_text()).get("steps") != train["steps"]
        if not path.exists() or stale:
            if env is None:
                env = make_env(config.eval_tasks, strict_heldout=True)  # never trained on them
                write_contexts(env)  # before the policy model loads
            found = evaluate_policy_on_tasks(
                env,
                make_policy(policy_adapter),
                config.eval_tasks,
                config.eval_samples_per_task,
                name=label,
                seed=config.seed,
                progress=config.progress,
            )
            atomic_write_json(
                path,
                {
                    "policy": label,
                    "adapter": policy_adapter,
                    "steps": train["steps"],
                    "rows": found,
                    "summary": summarize(found)[0],
                },
            )
            log("eval", policy=label, success_rate=summarize(found)[0]["success_rate"])
        saved = json.loads(path.read_text())
        summaries.append(saved["summary"])
        rows += saved["rows"]
    return {"adapter": str(adapter), "train": train, "summaries": summaries, "rows": rows}


def _train(config: GrpoConfig, env, target: Path) -> dict[str, Any]:
    """GRPO steps (resuming from the last TRL checkpoint); the PEFT adapter is written to a
    temporary folder and renamed to ``target``."""
    from transformers.trainer_utils import get_last_checkpoint

    from coral_env.backend.io import atomic_dir

    trainer_dir = target.parent / "trainer"
    trainer_dir.mkdir(parents=True, exist_ok=True)
    reward = EnvReward(env)
    check_report_to(config.report_to)
    with tensorboard_dir(target.parent / "tensorboard" if config.report_to == "tensorboard" else None):
        trainer = build_grpo_trainer(config, env, trainer_dir, reward)
    checkpoint = get_last_checkpoint(str(trainer_dir))
    started = time.perf_counter()
    with completion_positions_only():
        output = trainer.train(resume_from_checkpoint=checkpoint)
    history = [h for h in trainer.state.log_history if "reward" in h]
    train = {
        "steps": int(output.global_step),
        "seconds": time.perf_counter() - started,
        "resumed_from": checkpoint,
        "episodes": len(reward.history),
        "rewards": [h["reward"] for h in history],
        "log_history": history,
    }
    with atomic_dir(target, clean_stale=True) as tmp:
        trainer.model.save_pretrained(str(tmp))
        (tmp / "coral_policy.json").write_text(
            json.dumps({"base_model": config.policy_model, "trainer": "grpo", "train": train}, indent=2, default=str)
        )
    return train


def command(config: GrpoConfig) -> int:
    """``coral grpo``: train, evaluate, print the comparison and family tables."""
    from .evaluation import comparison_table, family_table

    result = train_grpo(config)
    print(comparison_table(result["summaries"]))
    print()
    print(family_table(result["summaries"]))
    train = result["train"]
    print(
        f"grpo: {train['steps']} steps, {train['episodes']} env episodes scored completions; policy {result['adapter']}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m trainers.grpo --preset cpu --train-tasks a,b --eval-tasks c --out DIR``."""
    from .commands import run

    return run("grpo", argv, prog="python -m trainers.grpo")


if __name__ == "__main__":
    sys.exit(main())
