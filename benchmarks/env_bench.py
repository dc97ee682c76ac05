#!/usr/bin/env python
"""Coral-v0 overhead and one episode per policy (benchmarks/env.md).

1. Step overhead: `env.step(action)` wall time vs executing the same strategy directly on the
   same adapter and validation questions (`strategies.runners.execute`), interleaved, medians;
   the memo is cleared before each timed step so the step really evaluates.
2. Memo: a repeated identical action (served from the memo), median over 200 repeats.
3. One episode per policy (random, fixed rule, zero-shot LLM) on three tasks, as a table.

Usage (after `coral setup --preset cpu --artifacts artifacts`):
  python benchmarks/env_bench.py --artifacts artifacts --tasks arc_easy,boolq,gsm8k --runs 3
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

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402

import coral_env  # noqa: E402,F401
from coral_env.strategies import parse_strategy  # noqa: E402
from coral_env.strategies.runners import execute  # noqa: E402
from policies import FixedRulePolicy, RandomPolicy, run_episode  # noqa: E402

ACTION = '{"family": "LORA", "lambda": 0.5}'


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--tasks", default="arc_easy,boolq,gsm8k")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--llm", default=None, help="policy model (default: policies.llm.default_policy_model())")
    p.add_argument("--out", type=Path, default=Path("runs/env_bench"))
    p.add_argument("--no-episodes", action="store_true", help="timings only (skip part 3)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tasks = args.tasks.split(",")
    env = gym.make("Coral-v0", task=tasks, preset="cpu", artifacts=args.artifacts)
    runtime = env.unwrapped.runtime

    # 1. step overhead vs the evaluation it performs
    env.reset(seed=0, options={"task": tasks[0]})
    state = runtime.task(tasks[0])
    strategy = parse_strategy(ACTION).strategy
    step_s, direct_s = [], []
    for _ in range(args.runs):
        runtime.clear_memo()
        env.reset(options={"task": tasks[0]})
        runtime.clear_memo()
        t = time.perf_counter()
        env.step(ACTION)
        step_s.append(time.perf_counter() - t)
        runtime.layout.set_flat(state.start_adapter)
        t = time.perf_counter()
        execute(strategy, runtime.strategy_context(state), state.splits.validation)
        direct_s.append(time.perf_counter() - t)
    # 2. memo
    env.reset(options={"task": tasks[0]})
    env.step(ACTION)
    memo = []
    for _ in range(200):
        env.reset(options={"task": tasks[0]})
        t = time.perf_counter()
        env.step(ACTION)
        memo.append(time.perf_counter() - t)
    timing = {
        "task": tasks[0],
        "action": ACTION,
        "n_validation": len(state.splits.validation),
        "step_median_s": statistics.median(step_s),
        "direct_median_s": statistics.median(direct_s),
        "ratio": statistics.median(step_s) / statistics.median(direct_s),
        "memo_median_ms": statistics.median(memo) * 1e3,
        "step_s": step_s,
        "direct_s": direct_s,
    }
    print(json.dumps(timing))
    if args.no_episodes:
        (args.out / "summary.json").write_text(json.dumps({"timing": timing}, indent=2))
        return

    # 3. one episode per policy per task
    from policies.llm import LLMPolicy, default_policy_model

    policies = [RandomPolicy(seed=0), FixedRulePolicy(), LLMPolicy(args.llm or default_policy_model(), seed=0)]
    rows = []
    print(f"context of {tasks[-1]}: {runtime.task(tasks[-1]).context!r}")
    for policy in policies:
        for task in tasks:
            out = run_episode(env, policy, task=task, seed=0)
            info = out["info"]
            rows.append(
                {
                    "policy": policy.name,
                    "task": task,
                    "action": out["actions"][0][:80],
                    "reward": out["reward"],
                    "before": info.get("metric_before"),
                    "after": info.get("metric_after"),
                    "error": info.get("error", "")[:60],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    (args.out / "summary.json").write_text(json.dumps({"timing": timing, "episodes": rows}, indent=2))
    print("\n| policy | task | action | before | after | reward |\n|---|---|---|---|---|---|")
    for r in rows:
        action = r["action"] if not r["error"] else f"invalid: {r['error']}"
        print(
            f"| {r['policy']} | {r['task']} | `{action}` | {r['before']:.3f} | {r['after']:.3f} | {r['reward']:.0f} |"
        )


if __name__ == "__main__":
    main()
