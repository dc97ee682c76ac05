"""Held-out comparison of policies on ``Coral-v0``: random, fixed rule, zero-shot LLM, ReST^EM
after each iteration, GRPO (TRL), PPO, A2C, DQN (and MaskablePPO with ``--maskable``).

Every policy is scored by the same loop (``trainers.evaluation``) on the same held-out tasks:
success rate (validation metric improved = binary reward 1) with a Wilson 95% CI, mean metric
and accuracy gains with bootstrap 95% CIs, and the family chosen per task. Writes
``benchmarks/policies.md`` and ``benchmarks/policies.png``; training runs go to ``--run-dir``
and resume when the script is run again.

Needs the stage-1/2 artifacts of the preset (``coral setup --preset cpu --artifacts DIR``):

    HF_HUB_OFFLINE=1 python benchmarks/policies_bench.py --preset cpu --artifacts DIR --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"])
    p.add_argument("--artifacts", default=None, help="artifacts root (coral setup --artifacts)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-tasks", default=None, help="comma-separated (default: the trainers' preset)")
    p.add_argument("--eval-tasks", default=None, help="comma-separated held-out tasks (default: the preset's)")
    p.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="episodes per held-out task for sampling policies (random, LLM; default: ReST^EM preset)",
    )
    p.add_argument("--restem-iterations", type=int, default=None)
    p.add_argument("--samples-per-task", type=int, default=None, help="ReST^EM K")
    p.add_argument("--keep-per-task", type=int, default=None, help="ReST^EM cap on kept samples per task")
    p.add_argument("--sft-epochs", type=float, default=None, help="ReST^EM SFT epochs per iteration")
    p.add_argument("--sft-lr", type=float, default=None, help="ReST^EM SFT learning rate")
    p.add_argument(
        "--reward-mode",
        default="binary",
        choices=["binary", "significant"],
        help="env reward for training and success (significant: McNemar p < 0.05 on validation)",
    )
    p.add_argument(
        "--validation-size",
        type=int,
        default=None,
        help="score rewards on the first N validation questions (Coral-v0 validation_size; default: all)",
    )
    p.add_argument("--workers", type=int, default=1, help="Ray actors that score episodes (ReST^EM, evaluations)")
    p.add_argument(
        "--summary",
        default=None,
        help="JSON file to merge the paired test differences into (restem_vs_random, restem_vs_zero_shot, ...)",
    )
    p.add_argument("--policy-model", default=None, help="LLM policy (default: default_policy_model())")
    p.add_argument("--grpo-steps", type=int, default=None, help="GRPO optimizer steps (default: the preset's)")
    p.add_argument("--grpo-generations", type=int, default=None, help="GRPO completions per prompt")
    p.add_argument("--grpo-lr", type=float, default=None, help="GRPO learning rate (default: the preset's)")
    p.add_argument("--sb3-timesteps", type=int, default=None)
    p.add_argument("--sb3-n-steps", type=int, default=None, help="PPO/A2C rollout length (default: the algo's)")
    p.add_argument("--sb3-batch-size", type=int, default=None, help="PPO/DQN minibatch (default: the preset's)")
    p.add_argument("--algos", default="ppo,a2c,dqn")
    p.add_argument("--maskable", action="store_true", help="also MaskablePPO (sb3-contrib)")
    p.add_argument("--skip", default="", help="comma-separated: random,fixed_rule,restem,grpo,sb3")
    p.add_argument("--run-dir", default="runs/bench_policies")
    p.add_argument("--out", default=str(HERE / "policies"), help="output prefix (.md and .png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def run(args: argparse.Namespace, make_env=None, encoder=None, make_policy=None) -> list[dict]:
    """All evaluations; returns the rows (the md and png are written as a side effect)."""
    import torch

    from coral_env.backend.io import atomic_write_json
    from policies import FixedRulePolicy, RandomPolicy
    from trainers.compare import evaluate_cached, merge_summary, paired_test_results
    from trainers.evaluation import (
        comparison_plot,
        env_factory,
        summarize,
    )
    from trainers.grpo import GrpoConfig, train_grpo
    from trainers.restem import RestemConfig, evaluation_rows, train_restem
    from trainers.sb3 import SB3Config, train_sb3

    if args.threads:
        torch.set_num_threads(args.threads)
    skip = {s for s in args.skip.split(",") if s}
    tasks = {k: v.split(",") for k, v in (("train_tasks", args.train_tasks), ("eval_tasks", args.eval_tasks)) if v}
    env_kw = dict(
        artifacts=args.artifacts,
        data_dir=args.data_dir,
        seed=args.seed,
        threads=args.threads,
        reward_mode=args.reward_mode,
        eval_test=True,  # per-question test correctness, for the paired comparisons
    )
    restem_cfg = RestemConfig.from_preset(
        args.preset,
        out=f"{args.run_dir}/restem",
        policy_model=args.policy_model,
        iterations=args.restem_iterations,
        samples_per_task=args.samples_per_task,
        eval_samples_per_task=args.eval_samples,
        keep_per_task=args.keep_per_task,
        num_train_epochs=args.sft_epochs,
        learning_rate=args.sft_lr,
        workers=args.workers,
        **tasks,
        **env_kw,
    )
    eval_tasks, n = restem_cfg.eval_tasks, restem_cfg.eval_samples_per_task
    env_settings = dict(auto_setup=restem_cfg.auto_setup, reward_mode=args.reward_mode, eval_test=True)
    if args.validation_size:
        env_settings["validation_size"] = args.validation_size
    where = (args.preset, args.artifacts, args.data_dir, args.seed)
    sb3_make_env = make_env or env_factory(*where, **env_settings)
    if make_env is None and args.workers > 1:  # Ray actors score one-step episodes; SB3 steps a real env
        make_env = env_factory(*where, workers=args.workers, **env_settings)
    make_env = make_env or sb3_make_env
    run_dir = Path(args.run_dir)
    timings, rows = {}, []

    def cached(name: str, policy, episodes: int) -> list[dict]:
        start = time.perf_counter()
        found = evaluate_cached(run_dir / f"{name}.json", make_env, eval_tasks, policy, episodes, name, args.seed)
        timings[name] = time.perf_counter() - start
        return found

    if "random" not in skip:
        rows += cached("random", RandomPolicy(seed=args.seed), n)
    if "fixed_rule" not in skip:
        rows += cached("fixed_rule", FixedRulePolicy(), 1)  # deterministic: one episode per task
    if "restem" not in skip:
        start = time.perf_counter()
        train_restem(restem_cfg, make_env=make_env, make_policy=make_policy)
        timings["restem (all iterations, incl. evaluations)"] = time.perf_counter() - start
        rows += evaluation_rows(run_dir / "restem")
    grpo_cfg = GrpoConfig.from_preset(
        args.preset,
        out=f"{args.run_dir}/grpo",
        policy_model=restem_cfg.policy_model,
        train_tasks=restem_cfg.train_tasks,
        eval_tasks=eval_tasks,
        eval_samples_per_task=n,
        eval_base="restem" in skip,  # the zero-shot row is ReST^EM's iteration 0 otherwise
        max_steps=args.grpo_steps,
        num_generations=args.grpo_generations,
        learning_rate=args.grpo_lr,
        **env_kw,
    )
    if "grpo" not in skip:
        start = time.perf_counter()
        result = train_grpo(grpo_cfg, make_env=make_env, make_policy=make_policy)
        timings["grpo (train + evaluations)"] = time.perf_counter() - start
        rows += result["rows"]
    if "sb3" not in skip:
        algos = [a for a in args.algos.split(",") if a] + (["maskable_ppo"] if args.maskable else [])
        for algo in algos:
            cfg = SB3Config.from_preset(
                args.preset,
                algo=algo,
                out=f"{args.run_dir}/sb3_{algo}",
                total_timesteps=args.sb3_timesteps,
                n_steps=args.sb3_n_steps,
                batch_size=args.sb3_batch_size,
                train_tasks=restem_cfg.train_tasks,
                eval_tasks=eval_tasks,
                **env_kw,
            )
            start = time.perf_counter()
            result = train_sb3(cfg, make_env=sb3_make_env, encoder=encoder)
            timings[f"{algo} (train + eval)"] = time.perf_counter() - start
            rows += result["rows"]

    rows.sort(key=lambda r: _order(r["policy"]))
    summaries = summarize(rows)
    atomic_write_json(run_dir / "rows.json", rows)
    comparison_plot(summaries, f"{args.out}.png", title=f"Held-out: {', '.join(eval_tasks)} ({args.preset})")
    paired = paired_test_results(rows)
    if args.summary and paired["differences"]:
        merge_summary(Path(args.summary), paired["differences"])
    text = _markdown(args, restem_cfg, grpo_cfg if "grpo" not in skip else None, summaries, timings, paired)
    Path(f"{args.out}.md").write_text(text)
    return rows


def _order(policy: str) -> tuple:
    first, last = ["random", "fixed_rule", "zero_shot"], ["ppo", "a2c", "dqn", "maskable_ppo"]
    if policy in first:
        return (first.index(policy), 0)
    if policy.startswith("restem_iter"):
        return (3, int(policy.removeprefix("restem_iter")))
    if policy == "grpo":
        return (4, 0)
    return (5, last.index(policy) if policy in last else len(last))


def _paired_lines(paired: dict) -> list[str]:
    if paired["table"] is None:
        return []
    return [
        "## Test split, paired over the same held-out questions",
        "",
        "Each question's correctness is averaged over a policy's episodes on its task (its expected "
        "correctness); gains are over each episode's starting adapter, differences are from the random "
        "policy. 95% CIs by a two-level bootstrap (`trainers/paired.py`): a policy's episodes resampled "
        "within each task, then the questions, the same for both sides. A deterministic policy has one "
        "episode per task, so its CI covers the questions only, not its training seed.",
        "",
        paired["table"],
        "",
    ]


def _restem_lines(folder: Path) -> list[str]:
    lines = []
    for path in sorted(folder.glob("iter_*/iteration.json")):
        it = json.loads(path.read_text())
        sft = it["sft"]
        trained = (
            "SFT skipped (no rewarded sample)"
            if sft.get("skipped")
            else (
                f"SFT {sft['steps']} steps on {sft['examples']} examples, loss {sft['first_loss']:.3f} -> "
                f"{sft['last_loss']:.3f}, {sft['seconds']:.0f} s"
            )
        )
        lines.append(f"- iteration {it['iteration']}: kept {json.dumps(it['kept'])}; {trained}.")
    return lines or ["- (not run)"]


def _grpo_lines(cfg) -> list[str]:
    if cfg is None:
        return []
    path = Path(cfg.out) / "adapter" / "coral_policy.json"
    train = json.loads(path.read_text())["train"] if path.exists() else None
    lines = [
        f"- GRPO (TRL `GRPOTrainer`): {cfg.max_steps} steps x {cfg.prompts_per_step} prompt(s) x "
        f"{cfg.num_generations} completions, lr {cfg.learning_rate:g}, beta {cfg.beta:g}, LoRA r={cfg.lora_r}, "
        "rewards from Coral-v0 (invalid JSON 0)."
    ]
    if train:
        rewards = ", ".join(f"{r:.2f}" for r in train["rewards"])
        lines.append(
            f"- GRPO trained {train['steps']} steps, {train['episodes']} env-scored completions, "
            f"{train['seconds']:.0f} s; mean reward per step: {rewards}."
        )
    return lines


def _markdown(args, cfg, grpo_cfg, summaries, timings, paired) -> str:
    import torch

    from trainers.evaluation import comparison_table, family_table

    saved = Path(cfg.out) / "config.json"
    model = json.loads(saved.read_text())["policy_model"] if saved.exists() else cfg.policy_model

    lines = [
        "# Policies on held-out Coral tasks",
        "",
        f"Generated by `benchmarks/policies_bench.py` ({time.strftime('%Y-%m-%d %H:%M')}); command:",
        "",
        "```",
        "HF_HUB_OFFLINE=1 python benchmarks/policies_bench.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"- preset `{args.preset}`, policy model `{model or 'default_policy_model()'}`; "
        f"training tasks {', '.join(cfg.train_tasks)}; held-out tasks {', '.join(cfg.eval_tasks)}.",
        f"- ReST^EM: {cfg.iterations} iterations, K={cfg.samples_per_task} samples per task, at most "
        f"{cfg.keep_per_task} kept, LoRA r={cfg.lora_r}, SFT {cfg.num_train_epochs:g} epochs at lr "
        f"{cfg.learning_rate:g}, restart from base={cfg.restart_from_base}.",
        *_grpo_lines(grpo_cfg),
        f"- Sampling policies (random, LLM) get {cfg.eval_samples_per_task} episodes per held-out task; "
        "deterministic ones (fixed rule, greedy SB3 agents) get one, so their CIs are wide.",
        f"- Training reward `{args.reward_mode}` on "
        + (f"the first {args.validation_size} validation questions" if args.validation_size else "the validation split")
        + ". Success = the validation metric improved (by any amount, "
        "whatever the reward mode). Gains are metric after - before on the validation split (balanced "
        "accuracy for two-answer tasks under `reward_metric=auto`).",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}.",
        "",
        "## Success rate and gains (95% CI)",
        "",
        comparison_table(summaries),
        "",
        f"![policies]({Path(args.out).name}.png)",
        "",
        *_paired_lines(paired),
        "## ReST^EM iterations",
        "",
        *_restem_lines(Path(cfg.out)),
        "",
        "## Family choice per held-out task",
        "",
        family_table(summaries),
        "",
        "## Wall time (s)",
        "",
        "A stage already complete in `--run-dir` is reloaded, not rerun: its seconds are the reload's.",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.0f} |" for k, v in timings.items()],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(HERE.parent))
    run(parse_args())
