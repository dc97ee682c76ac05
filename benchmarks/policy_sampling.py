"""Policy sampling speed: K replies from one prefill (shared prefix) vs K prefills (benchmarks/policy_sampling.md).

The packaged policy model (Qwen2.5-Coder-0.5B-Instruct, bf16) samples K replies to the real
policy prompt of a task context, with the paper's settings (T=1.0, top-p 0.9, top-k 50, at
most 96 new tokens). ``separate`` is transformers' ``num_return_sequences`` (the prompt is
expanded to K rows before prefill); ``shared`` prefills once and expands the KV cache. Runs
are interleaved (shared, separate, shared, ...) with the same seeds; samples/s and the JSON
validity rate of the replies are reported, medians over ``--runs``. Run:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/policy_sampling.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from coral_env.backend.io import atomic_write_json  # noqa: E402
from policies.llm import OFFLINE_DEFAULT, LLMPolicy, SamplingConfig  # noqa: E402

# A context of the shape the env writes: description, labeled support examples, answer format, facts.
CONTEXT = """This task asks grade-school science questions about everyday physical phenomena and picks the correct
answer among four options.

Examples from the support set:
Q: Which of these is the best conductor of heat? A: a metal spoon
Q: What causes the seasons on Earth? A: the tilt of Earth's axis
Q: A student mixes baking soda and vinegar. Which observation shows a chemical change? A: bubbles form

Answer format: the text of the correct option.
Facts: multiple choice, 4 choices, questions of about 21 words on average."""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=OFFLINE_DEFAULT, help="policy model")
    p.add_argument("--k", default="4,20", help="comma-separated sample counts K")
    p.add_argument("--runs", type=int, default=3, help="interleaved runs per (K, method)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default="benchmarks/policy_sampling.json", help="results JSON")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    policy = LLMPolicy(args.model, sampling=SamplingConfig(), seed=0)
    prompt_tokens = len(policy.tokenizer(policy.prompt(CONTEXT, "arc_easy"), add_special_tokens=False)["input_ids"])
    rows = []
    for k in (int(x) for x in args.k.split(",")):
        for run in range(args.runs):
            for method in ("shared", "separate"):
                policy.shared_prefix = method == "shared"
                start = time.perf_counter()
                replies = policy.sample(CONTEXT, "arc_easy", n=k, seed=1000 * k + run)
                seconds = time.perf_counter() - start
                valid = sum(policy.to_action(r)[1] for r in replies)
                rows.append(
                    {
                        "k": k,
                        "run": run,
                        "method": method,
                        "seconds": seconds,
                        "valid": valid,
                        "samples_per_s": k / seconds,
                    }
                )
                print(f"K={k:2d} run {run} {method:8s} {seconds:6.1f} s  valid {valid}/{k}", flush=True)
    summary = {}
    for k in sorted({r["k"] for r in rows}):
        entry = {}
        for method in ("shared", "separate"):
            mine = [r for r in rows if r["k"] == k and r["method"] == method]
            entry[method] = {
                "median_samples_per_s": statistics.median(r["samples_per_s"] for r in mine),
                "median_seconds": statistics.median(r["seconds"] for r in mine),
                "validity": sum(r["valid"] for r in mine) / (k * len(mine)),
            }
        ratios = [
            a["seconds"] / b["seconds"]
            for a, b in zip(
                [r for r in rows if r["k"] == k and r["method"] == "separate"],
                [r for r in rows if r["k"] == k and r["method"] == "shared"],
            )
        ]
        entry["speedup_median_of_paired_runs"] = statistics.median(ratios)
        summary[str(k)] = entry
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "model": args.model,
        "prompt_tokens": prompt_tokens,
        "runs": rows,
        "summary": summary,
        "load_average": os.getloadavg(),
    }
    atomic_write_json(Path(args.out), result)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
