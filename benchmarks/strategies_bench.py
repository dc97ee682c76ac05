#!/usr/bin/env python
"""Cost and effect of each strategy family (benchmarks/strategies.md).

SmolLM2-135M-Instruct, cpu preset, the first N ARC-Easy validation questions, starting from the
environment's adapter for arc_easy (generated from the support prompts and, where a CVAE exists,
aligned). For each strategy: wall time relative to a plain evaluation of the same questions run
just before it (median of the per-run ratios), and the accuracy change with a paired-bootstrap
95% CI.

Usage (repository root, after `coral setup --preset cpu --artifacts artifacts`):
  python benchmarks/strategies_bench.py --artifacts artifacts --runs 5 --out runs/strategies
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from coral_env.backend.metrics import bootstrap_ci, wilson_ci  # noqa: E402
from coral_env.env.runtime import CoralRuntime, EnvConfig  # noqa: E402
from coral_env.strategies import LatentStrategy, LoRAStrategy, TTLStrategy, TTSStrategy  # noqa: E402
from coral_env.strategies.runners import execute  # noqa: E402

STRATEGIES = {
    "LORA lambda=0.5": LoRAStrategy(lambda_=0.5),
    "TTS routing M1 (m=4)": TTSStrategy(num_prompt_batches=4, method="avg_sim_score"),
    "TTS routing M2 (m=4)": TTSStrategy(num_prompt_batches=4, method="avg_prompt_embed"),
    "TTS max_confidence (m=4)": TTSStrategy(num_prompt_batches=4, method="max_confidence"),
    "TTS majority_vote (m=4)": TTSStrategy(num_prompt_batches=4, method="majority_vote"),
    "TTS sum_logprobs (m=4)": TTSStrategy(num_prompt_batches=4, method="sum_logprobs"),
    "Latent 5 steps lr 0.01": LatentStrategy(slot_steps=5, slot_lr=0.01),
    "Latent 5 steps lr 0.1": LatentStrategy(slot_steps=5, slot_lr=0.1),
    "TTL 10 steps lr 1e-4 bs 4": TTLStrategy(ttl_steps=10, learning_rate=1e-4, batch_size=4),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--task", default="arc_easy")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/strategies"))
    p.add_argument("--only", default=None, help="run only the strategies whose name contains this text")
    args = p.parse_args()
    strategies = {k: v for k, v in STRATEGIES.items() if not args.only or args.only in k}
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    runtime = CoralRuntime.get(EnvConfig(preset="cpu", artifacts=args.artifacts))
    state = runtime.task(args.task)
    examples = state.splits.validation[: args.n]
    ctx = runtime.strategy_context(state)
    runtime.layout.set_flat(state.start_adapter)

    def plain():
        return ctx.evaluate(examples)

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t

    # Each strategy is paired with a plain evaluation run just before it, and its cost is the
    # median over runs of strategy / paired plain: the shared host drifts by 10-20% within
    # minutes, and one plain time per run made LORA look cheaper than a plain evaluation.
    base, _ = timed(plain)  # warm-up, and the accuracy baseline (deterministic)
    timings: dict[str, list[float]] = {"plain": []}
    ratios: dict[str, list[float]] = {}
    ratios_wo_gen: dict[str, list[float]] = {}
    results = {}
    generation: list[float] = []
    for run in range(args.runs):
        # One adapter from one TTS prompt batch (the generator's N prompts), as TTS generates it.
        generation.append(
            timed(lambda: ctx.adapters.generate([ex.question for ex in state.splits.support[: ctx.prompts_per_batch]]))[
                1
            ]
        )
        for name, strategy in strategies.items():
            _, plain_s = timed(plain)
            timings["plain"].append(plain_s)
            outcome = execute(strategy, ctx, examples)
            seconds = outcome.cost["seconds"]
            timings.setdefault(name, []).append(seconds)
            ratios.setdefault(name, []).append(seconds / plain_s)
            # TTS goals exclude generating (and aligning) its m adapters.
            ratios_wo_gen.setdefault(name, []).append(
                (seconds - outcome.cost.get("adapters_generated", 0) * generation[-1]) / plain_s
            )
            results[name] = outcome
        print(f"run {run}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in timings.items()), flush=True)

    plain_s = statistics.median(timings["plain"])
    gen_s = statistics.median(generation)
    base_correct = base.correct.astype(float)
    rows = []
    for name, outcome in results.items():
        diff = outcome.result.correct.astype(float) - base_correct
        lo, hi = bootstrap_ci(diff)
        rows.append(
            {
                "strategy": name,
                "median_s": statistics.median(timings[name]),
                "relative_cost": statistics.median(ratios[name]),
                "ratios": ratios[name],
                "relative_cost_without_generation": statistics.median(ratios_wo_gen[name]),
                "accuracy": outcome.result.accuracy,
                "ci95": wilson_ci(int(outcome.result.correct.sum()), len(diff)),
                "delta": float(diff.mean()),
                "delta_ci95": (lo, hi),
                "cost": outcome.cost,
            }
        )
    ttl_name = next((n for n in strategies if n.startswith("TTL")), None)
    summary = {
        "task": args.task,
        "n": len(examples),
        "runs": args.runs,
        "threads": args.threads,
        "plain_eval_s": plain_s,
        "base_accuracy": base.accuracy,
        "base_ci95": base.ci95,
        "adapter_source": state.source,
        "adapter_generation_s": gen_s,
        "ttl_seconds_per_step": (
            (statistics.median(timings[ttl_name]) - plain_s) / strategies[ttl_name].ttl_steps if ttl_name else None
        ),
        "rows": rows,
        "timings": timings,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("rows", "timings")}, default=float))
    for row in rows:
        print(
            f"{row['strategy']:28s} x{row['relative_cost']:.2f} "
            f"(x{row['relative_cost_without_generation']:.2f} w/o gen)  acc {row['accuracy']:.3f}  "
            f"delta {row['delta']:+.3f} [{row['delta_ci95'][0]:+.3f}, {row['delta_ci95'][1]:+.3f}]"
        )


if __name__ == "__main__":
    main()
