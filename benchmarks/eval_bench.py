#!/usr/bin/env python
"""Our multiple-choice evaluator vs lm-evaluation-harness on ARC-Easy (first 500 test questions).

Measures, interleaved run by run (ours, lm-eval, ours, lm-eval, ...) so background load hits
both alike:
  * accuracy / acc_norm of both and item-by-item agreement of predictions;
  * end-to-end wall time of each CLI (`coral eval ... --json` vs lm-eval run_lm_eval.py) and
    the log-likelihood phase alone (ours: `evaluate`; lm-eval: HFLM.loglikelihood);
  * our useful model FLOP/s (2 x non-embedding params x real tokens + output layer at the
    scored positions) against this machine's bf16 matmul FLOP/s (2048^2 matmul, same threads,
    measured before each run; also against the best rate of the session);
  * setting a 2.4M-parameter adapter in place (SmolLM2, r=8 on q,k,v,o,gate,up,down).

The questions are the first N rows of the preset's ARC-Easy test split (paper: 1000, the test
file in order), checked against the artifacts' split manifest as `coral eval` checks them (read
only: a mismatch stops the benchmark before anything runs).

Usage (repository root, nothing else running):
  python benchmarks/eval_bench.py --runs 3 --out runs/eval_bench
Writes <out>/summary.json; benchmarks/eval.md holds the latest numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK = "arc_easy"


def bench_examples(limit: int, preset: str, artifacts, split_seed: int = 0, data_dir=None, task: str | None = None):
    """The first ``limit`` test rows of ``task`` (default: ``TASK``) at ``preset``'s split sizes,
    checked against (never written to) the split manifest under ``artifacts``;
    ``SplitContractError`` on a mismatch."""
    from coral_env.setup.artifacts import ArtifactPaths
    from coral_env.setup.split_manifest import contract_splits

    task = task or TASK
    test = contract_splits(ArtifactPaths(artifacts, preset), task, data_dir, split_seed, record=False).test
    if limit > len(test):
        raise ValueError(f"--limit {limit} is more than the {len(test)} {task} test rows at preset {preset}")
    return test[:limit]


def matmul_gflops(threads: int, n: int = 2048, reps: int = 10) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def our_phase(args: argparse.Namespace) -> dict:
    """In-process: load once, then time `evaluate` (the log-likelihood phase) once."""
    import torch

    from coral_env.allocator import tune_allocator

    tune_allocator()  # as `coral eval` does at start-up
    from coral_env.backend.evaluator import evaluate
    from coral_env.backend.models import load_model
    from coral_env.backend.packing import pack_rows
    from coral_env.backend.scoring import ScoringConfig, encode_pairs, make_groups
    from coral_env.tasks import build_requests

    torch.set_num_threads(args.threads)
    examples = bench_examples(args.limit, args.preset, args.artifacts, args.split_seed, args.data_dir)
    model, tok = load_model("smollm2-135m-instruct")
    start = time.perf_counter()
    result = evaluate(model, tok, examples, task=TASK)
    seconds = time.perf_counter() - start
    # Token accounting (the packing is deterministic, so recomputing it is exact).
    requests = [build_requests(ex, "plain", tok, task=TASK) for ex in examples]
    keys = [(q, c) for q, r in enumerate(requests) for c in range(len(r))]
    groups = make_groups(encode_pairs(tok, [p for r in requests for p in r]), keys, 8192)
    rows = pack_rows(groups, ScoringConfig().row_len)
    real = sum(g.length for g in groups)
    scored = sum(len(c) for g in groups for c in g.continuations)
    cfg = model.config
    emb = cfg.vocab_size * cfg.hidden_size
    non_emb = sum(p.numel() for p in model.parameters()) - emb
    flops = 2 * non_emb * real + 2 * emb * scored
    return {
        "seconds": seconds,
        "accuracy": result.accuracy,
        "acc_norm": result.acc_norm,
        "predictions": result.predictions,
        "real_tokens": real,
        "scored_positions": scored,
        "rows": len(rows),
        "naive_tokens": sum(len(c) + len(x) - 1 for x, c in encode_pairs(tok, [p for r in requests for p in r])),
        "gflops": flops / seconds / 1e9,
    }


def set_flat_ms(threads: int) -> dict:
    import torch

    from coral_env.backend.lora import AdapterLayout, LoraSpec, attach_lora
    from coral_env.backend.models import load_model

    torch.set_num_threads(threads)
    model, _ = load_model("smollm2-135m-instruct")
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    layout = AdapterLayout.from_model(attach_lora(model, LoraSpec(rank=8, alpha=16, targets=targets)))
    vec = torch.randn(layout.size)
    times = []
    for _ in range(50):
        t = time.perf_counter()
        layout.set_flat(vec)
        times.append(time.perf_counter() - t)
    return {"params": layout.size, "median_ms": statistics.median(times) * 1e3}


def run_cli(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t, out.stdout


def main(argv: list[str] | None = None) -> None:
    from coral_env.setup.artifacts import default_artifacts_root

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="paper", help="whose split sizes (paper: 1000 test rows; default: %(default)s)")
    p.add_argument("--artifacts", default=str(default_artifacts_root()), help="whose split manifest to check")
    p.add_argument("--split-seed", type=int, default=0, help="must match the manifest's (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="benchmark JSONL folder (default: $CORAL_DATA_DIR, else ../shared)")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "eval_bench")
    p.add_argument("--phase", choices=["ours", "flat"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase == "ours":
        print(json.dumps(our_phase(args)))
        return
    if args.phase == "flat":
        print(json.dumps(set_flat_ms(args.threads)))
        return
    bench_examples(args.limit, args.preset, args.artifacts, args.split_seed, args.data_dir)  # fail before any run
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        OMP_NUM_THREADS=str(args.threads),
        TOKENIZERS_PARALLELISM="false",
    )
    here = [sys.executable, str(Path(__file__).resolve())]
    splits = ["--preset", args.preset, "--artifacts", args.artifacts, "--split-seed", str(args.split_seed)]
    splits += ["--data-dir", args.data_dir] if args.data_dir else []
    runs = []
    for i in range(args.runs):
        row = {"matmul_gflops": matmul_gflops(args.threads)}
        ours = ["--phase", "ours", "--limit", str(args.limit), "--threads", str(args.threads), *splits]
        wall, out = run_cli(here + ours, env)
        row["ours"] = json.loads(out.strip().splitlines()[-1])
        wall, out = run_cli(
            [
                sys.executable,
                "-m",
                "coral_env.cli",
                "eval",
                "--task",
                TASK,
                "--limit",
                str(args.limit),
                "--threads",
                str(args.threads),
                "--json",
                *splits,
            ],
            env,
        )
        row["ours_cli_wall"] = wall
        lm_dir = args.out / f"lm_eval_run{i}"
        wall, _ = run_cli(
            [
                sys.executable,
                "benchmarks/lm_eval/run_lm_eval.py",
                "--output-dir",
                str(lm_dir),
                "--limit",
                str(args.limit),
                "--threads",
                str(args.threads),
            ],
            env,
        )
        row["lm_eval_cli_wall"] = wall
        row["lm_eval"] = json.loads((lm_dir / "timing.json").read_text())
        preds = [json.loads(line) for line in (lm_dir / "predictions.jsonl").read_text().splitlines()]
        ours_pred = row["ours"].pop("predictions")
        row["disagreements"] = sum(int(a != b["pred"]) for a, b in zip(ours_pred, preds))
        runs.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "lm_eval"}), flush=True)
    _, out = run_cli(here + ["--phase", "flat", "--threads", str(args.threads)], env)
    # The matmul reference moves between runs (one run here measured half the others' rate), so
    # beside each run's own reference report the fraction of the best rate seen in the session.
    best = max(r["matmul_gflops"] for r in runs)
    for r in runs:
        r["fraction_of_run_matmul"] = r["ours"]["gflops"] / r["matmul_gflops"]
        r["fraction_of_best_matmul"] = r["ours"]["gflops"] / best
    summary = {
        "runs": runs,
        "set_flat": json.loads(out.strip().splitlines()[-1]),
        "median_fraction_of_best_matmul": statistics.median(r["fraction_of_best_matmul"] for r in runs),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["set_flat"]))
    print(f"median fraction of the best matmul rate: {summary['median_fraction_of_best_matmul']:.1%}")


if __name__ == "__main__":
    main()
