"""The rows of ``coral demo``'s table, one per (method, held-out task), on the test split.

Every row has the test accuracy with its Wilson 95% CI and, where the method starts from (or
replaces) the env's starting adapter, the test gain over that adapter with a paired 95% CI over
the same questions:

* stage rows (``stage_rows``): the base model, the mean adapter of the setup tasks'
  checkpoints, the generated adapter and the aligned one (the env's starting adapter);
* policy rows (``policy_rows``): a policy's episodes on the task (``trainers.evaluation``
  rows with per-question test correctness), accuracy averaged over episodes, gain by the
  two-level bootstrap of ``trainers.paired``;
* baseline rows (``baseline_rows``): the papers' LoRA baselines, trained without the task.
"""

from __future__ import annotations

from typing import Any

import numpy as np

POLICY_LABELS = {
    "oracle": "Policy: oracle (best catalogue entry on validation)",
    "random": "Policy: random (uniform over the catalogue)",
    "fixed_rule": "Policy: fixed rule (the papers' table)",
    "zero_shot": "Policy: zero-shot LLM",
    "ppo": "Policy: PPO (SB3)",
    "closed_loop": "Policy: ReST^EM, closed loop (up to 3 strategies)",
}


def _row(method: str, label: str, task: str, correct: np.ndarray, start: np.ndarray | None, **extra) -> dict:
    """A table row from per-question (expected) correctness; the gain is paired with ``start``."""
    from coral_env.backend.metrics import paired_bootstrap_ci, wilson_ci

    n, accuracy = len(correct), float(np.mean(correct))
    row = {
        "method": method,
        "label": label,
        "task": task,
        "accuracy": accuracy,
        "n": n,
        "ci95": list(wilson_ci(round(accuracy * n), n)),
    }
    if start is not None:
        row["gain"] = accuracy - float(np.mean(start))
        row["gain_ci"] = list(paired_bootstrap_ci(start, correct))
    return row | extra


def mean_adapter(paths, tasks: list[str]):
    """The mean over ``tasks`` of each task's phase-2 checkpoints: the adapter a generator must beat."""
    import torch

    return torch.stack([paths.load_checkpoints(t, (2,))[0].mean(0) for t in tasks]).mean(0)


def stage_rows(runtime, tasks: list[str], mean: Any | None = None) -> list[dict[str, Any]]:
    """Base model, mean adapter (when given), generated adapter and, with a CVAE, the aligned one,
    per task; refuses (``HeldOutError``) a task whose generator or CVAE was trained on it."""
    import torch

    rows = []
    for task in tasks:
        runtime.require_heldout(task)  # strict: artifacts trained on a held-out task would flatter it
        state = runtime.task(task)
        start, _ = runtime.evaluate(state, state.start_adapter, None, split="test")
        generated = runtime.generator_for(task).generate_adapter([ex.question for ex in state.splits.support])
        stages = [("base", "Base model (no adapter)", torch.zeros(runtime.layout.size))]
        if mean is not None:
            stages.append(("mean_adapter", "Mean adapter of the setup tasks", mean))
        stages.append(("coral_generator", "CORAL: generator", generated))
        if state.source == "generated+aligned":
            stages.append(("coral_aligned", "CORAL: generator + alignment (starting adapter)", state.start_adapter))
        for method, label, adapter in stages:
            evaluation, _ = runtime.evaluate(state, adapter, None, split="test")
            correct = evaluation.result.correct.astype(float)
            rows.append(_row(method, label, task, correct, start.result.correct.astype(float), group="stage"))
    return rows


def policy_rows(episodes: list[dict]) -> list[dict[str, Any]]:
    """Per (policy, task): mean test accuracy over the policy's episodes, and its test gain over
    each episode's starting adapter (two-level paired bootstrap, ``trainers.paired``)."""
    from .paired import policy_test_gain

    rows = []
    for policy, task in dict.fromkeys((e["policy"], e["task"]) for e in episodes if e.get("test_correct")):
        mine = [e for e in episodes if (e["policy"], e["task"]) == (policy, task)]
        correct = np.mean([e["test_correct"] for e in mine], axis=0)
        gain = policy_test_gain(mine, policy)
        method, label = _policy_method(policy)
        row = _row(method, label, task, correct, None, group="policy", episodes=len(mine))
        rows.append(row | {"gain": gain["gain"], "gain_ci": gain["ci"]})
    return rows


def _policy_method(policy: str) -> tuple[str, str]:
    if policy.startswith("restem_iter"):
        iteration = policy.removeprefix("restem_iter")
        return f"coral_policy_restem_{iteration}", f"Policy: ReST^EM, iteration {iteration}"
    return f"coral_policy_{policy}", POLICY_LABELS.get(policy, f"Policy: {policy}")


def baseline_rows(runtime, config, tasks: list[str]) -> list[dict[str, Any]]:
    """The papers' LoRA baselines (``coral_env.setup.baselines``), trained on the setup tasks and
    fine-tuned on each held-out task's support split; test rows with gains over the starting adapter."""
    from pathlib import Path

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
        result = evaluation.result
        return {"accuracy": float(result.accuracy), "n": int(result.n), "correct": result.correct.astype(int).tolist()}

    with runtime.lock:  # the baselines train the runtime's model directly (runtime module docstring)
        snapshot = runtime.layout.get_flat()
        try:
            found = run_baselines(
                runtime.model,
                runtime.tokenizer,
                runtime.layout,
                init,
                bconfig,
                targets=tasks,
                train_tasks=config.setup_tasks,
                out=Path(config.out) / "baselines",
                load_splits=runtime.splits,
                evaluate_test=evaluate_test,
                methods=config.baselines,
                progress=config.progress,
            )
        finally:
            runtime.layout.set_flat(snapshot)
    rows = []
    for r in found:
        state = runtime.task(r["task"])
        start, _ = runtime.evaluate(state, state.start_adapter, None, split="test")
        mine, base = np.asarray(r["correct"], dtype=float), start.result.correct.astype(float)
        rows.append(_row(r["method"], r["label"], r["task"], mine, base, group="baseline"))
    return rows


__all__ = ["POLICY_LABELS", "mean_adapter", "stage_rows", "policy_rows", "baseline_rows"]
