#!/usr/bin/env python
"""Coral's generative evaluator vs lm-evaluation-harness `generate_until` on GSM8K.

Both sides decode the same prompts ("Question: {question}\\nAnswer:", 0-shot, no BOS) greedily
with SmolLM2-135M-Instruct in bf16, stop at the same strings ("Question:", a blank line, EOS),
at most the same number of new tokens, at the same batch size, on the first N rows of
`gsm8k/test.jsonl` in file order. lm-eval reads them through
`benchmarks/lm_eval/tasks/gsm8k_local.yaml` (its built-in gsm8k task with local data, 0-shot and
Coral's stop strings).

Runs interleave (ours, lm-eval, ours, lm-eval, ...) so background load hits both alike; each is
a fresh process, so the wall time is end to end (imports, model load, data, decoding, scoring).
Reported:
  * exact match of both: ours (Coral's extractor), lm-eval's `flexible-extract` and
    `strict-match`, and lm-eval's texts scored by Coral's extractor;
  * item by item: identical decoded texts, identical correctness;
  * wall time per run and the decoding phase alone (ours: `evaluate`; lm-eval:
    `HFLM.generate_until`), medians and the median of the paired per-run ratios.

With --slot it instead times SLOT (the paper's steps and learning rate: per-question deltas fitted
on the prompt, then decoding with them) against a plain evaluation of the same questions.

Usage (repository root, lm_eval==0.4.13 installed, nothing else running):
  python benchmarks/generation_bench.py --runs 3 --out runs/generation_bench
  python benchmarks/generation_bench.py --slot --runs 3 --out runs/generation_bench
Writes <out>/summary.json and prints a markdown table; benchmarks/generation.md holds the latest.
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

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
TASK_TEMPLATE = REPO / "benchmarks" / "lm_eval" / "tasks" / "gsm8k_local.yaml"
MODEL = "smollm2-135m-instruct"
TORCH_DTYPES = {"bf16": "bfloat16", "fp32": "float32"}


def gsm8k_file(data_dir: str | None) -> Path:
    from coral_env.tasks.loading import resolve_data_dir

    path = resolve_data_dir(data_dir) / "gsm8k" / "test.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} is missing; point --data-dir at the folder holding gsm8k/test.jsonl")
    return path


def first_examples(path: Path, limit: int):
    """The first ``limit`` rows of the file, as Coral's gsm8k converter reads them."""
    from coral_env.tasks.converters import convert_gsm8k
    from coral_env.tasks.loading import read_jsonl

    rows = read_jsonl(path)[:limit]
    return [convert_gsm8k(row, f"test-{i}") for i, row in enumerate(rows)]


def our_phase(args: argparse.Namespace) -> dict:
    import torch

    from coral_env.allocator import tune_allocator

    tune_allocator()
    from coral_env.backend.evaluator import GenerationConfig, evaluate
    from coral_env.backend.models import load_model

    torch.set_num_threads(args.threads)
    examples = first_examples(gsm8k_file(args.data_dir), args.limit)
    model, tok = load_model(MODEL, dtype=args.dtype)
    start = time.perf_counter()
    result = evaluate(model, tok, examples, task="gsm8k", generation=GenerationConfig(args.max_new_tokens, args.batch))
    return {
        "decode_s": time.perf_counter() - start,
        "accuracy": result.accuracy,
        "outputs": result.outputs,
        "correct": [bool(c) for c in result.correct],
    }


def slot_vs_plain(args: argparse.Namespace) -> dict:
    """In one process: a plain evaluation and a SLOT one (the paper's steps and learning rate) on the
    same questions, interleaved; SLOT = its per-question deltas (one prompt pass) + decoding with them."""
    import torch

    from coral_env.allocator import tune_allocator

    tune_allocator()
    from coral_env.backend.decoding import generate_greedy
    from coral_env.backend.evaluator import GenerationConfig, evaluate
    from coral_env.backend.models import load_model
    from coral_env.strategies.latent import optimise_deltas
    from coral_env.strategies.schema import LatentStrategy
    from coral_env.tasks import build_generation_prompt, stop_sequences

    torch.set_num_threads(args.threads)
    examples = first_examples(gsm8k_file(args.data_dir), args.limit)
    model, tok = load_model(MODEL, dtype=args.dtype)
    slot = LatentStrategy()
    prompts = [build_generation_prompt(ex, "plain", tok, task="gsm8k") for ex in examples]
    stop = tuple(stop_sequences("gsm8k"))
    generation = GenerationConfig(args.max_new_tokens, args.batch)

    def plain() -> dict:
        start = time.perf_counter()
        evaluate(model, tok, examples, task="gsm8k", generation=generation)
        return {"plain_s": time.perf_counter() - start}

    def with_slot() -> dict:
        start = time.perf_counter()
        deltas = optimise_deltas(model, tok, prompts, slot.slot_steps, slot.slot_lr)
        fit = time.perf_counter() - start
        generate_greedy(model, tok, prompts, args.max_new_tokens, stop, args.batch, head_delta=deltas)
        return {"slot_s": time.perf_counter() - start, "slot_fit_s": fit}

    rows = []
    for run in range(args.runs):  # alternate which goes first
        rows.append(plain() | with_slot() if run % 2 == 0 else with_slot() | plain())
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "slot": {"slot_steps": slot.slot_steps, "slot_lr": slot.slot_lr},
        "runs": rows,
        "slot_over_plain": statistics.median(r["slot_s"] / r["plain_s"] for r in rows),
    }


def lm_eval_phase(args: argparse.Namespace) -> dict:
    """lm-eval in this process through its Python API, timing `HFLM.generate_until`."""
    import torch

    torch.set_num_threads(args.threads)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from coral_env.backend.models import resolve_model_path

    sys.path.insert(0, str(TASK_TEMPLATE.parents[1]))
    from run_lm_eval import render_task

    task_dir = render_task(args.data, Path(args.out) / "lm_eval_task", TASK_TEMPLATE).parent
    timed = {"s": 0.0}
    original = HFLM.generate_until

    def generate_until(self, *a, **kw):
        start = time.perf_counter()
        try:
            return original(self, *a, **kw)
        finally:
            timed["s"] += time.perf_counter() - start

    HFLM.generate_until = generate_until
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={resolve_model_path(MODEL)},dtype={TORCH_DTYPES[args.dtype]}",
        tasks=["gsm8k_local"],
        task_manager=TaskManager(include_path=str(task_dir)),
        limit=args.limit,
        batch_size=args.batch,
        device="cpu",
        log_samples=True,
        gen_kwargs={"max_gen_toks": args.max_new_tokens},
    )
    samples = sorted(out["samples"]["gsm8k_local"], key=lambda s: s["doc_id"])
    flexible = [s for s in samples if s["filter"] == "flexible-extract"]
    metrics = out["results"]["gsm8k_local"]
    return {
        "decode_s": timed["s"],
        "exact_match_flexible": metrics["exact_match,flexible-extract"],
        "exact_match_strict": metrics["exact_match,strict-match"],
        "outputs": [s["resps"][0][0] for s in flexible],
        "version": lm_eval.__version__,
    }


def run_phase(phase: str, args: argparse.Namespace, env: dict) -> tuple[float, dict]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--limit", str(args.limit)]
    cmd += ["--batch", str(args.batch), "--threads", str(args.threads), "--max-new-tokens", str(args.max_new_tokens)]
    cmd += ["--out", str(args.out), "--data", str(args.data), "--dtype", args.dtype]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{phase} run failed:\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def compare(ours: dict, theirs: dict, examples) -> dict:
    from coral_env.backend.decoding import cut_at_stop
    from coral_env.tasks import stop_sequences
    from coral_env.tasks.answers import answers_match

    # lm-eval cuts at the stop strings too, but keeps what precedes EOS; strip both alike.
    stop = tuple(stop_sequences("gsm8k"))
    theirs_text = [cut_at_stop(t, stop) for t in theirs["outputs"]]
    theirs_correct = [answers_match("number", t, ex.answer) for t, ex in zip(theirs_text, examples)]
    n = len(examples)
    return {
        "identical_texts": sum(a.strip() == b.strip() for a, b in zip(ours["outputs"], theirs_text)) / n,
        "same_correctness": sum(a == b for a, b in zip(ours["correct"], theirs_correct)) / n,
        "lm_eval_texts_coral_extractor": sum(theirs_correct) / n,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--limit", type=int, default=200, help="first N test rows in file order (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="batch size of both sides (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--dtype",
        choices=sorted(TORCH_DTYPES),
        default="bf16",
        help="model dtype of both sides (fp32 shows the texts agree where bf16 rounding ties break apart)",
    )
    p.add_argument("--data-dir", default=None, help="benchmark JSONL folder (default: $CORAL_DATA_DIR, else ../shared)")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "generation_bench")
    p.add_argument(
        "--slot",
        action="store_true",
        help="time SLOT against a plain evaluation instead (in one process, --runs pairs)",
    )
    p.add_argument("--phase", choices=["ours", "lm_eval"], help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        row = our_phase(args) if args.phase == "ours" else lm_eval_phase(args)
        print(json.dumps(row))
        return
    if args.slot:
        result = slot_vs_plain(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "slot.json").write_text(json.dumps(result, indent=2))
        print(f"SLOT / plain generative evaluation (median of {args.runs} pairs): {result['slot_over_plain']:.2f}x")
        return
    args.data = gsm8k_file(args.data_dir)
    examples = first_examples(args.data, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    runs = []
    for i in range(args.runs):
        ours_wall, ours = run_phase("ours", args, env)
        theirs_wall, theirs = run_phase("lm_eval", args, env)
        row = {"ours_wall_s": ours_wall, "lm_eval_wall_s": theirs_wall, "ours_decode_s": ours["decode_s"]}
        row |= {"lm_eval_decode_s": theirs["decode_s"], "ours_accuracy": ours["accuracy"]}
        row |= {k: theirs[k] for k in ("exact_match_flexible", "exact_match_strict")}
        row |= compare(ours, theirs, examples)
        runs.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "outputs_last_run.json").write_text(json.dumps({"ours": ours["outputs"], "lm_eval": theirs["outputs"]}))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    summary = {
        "settings": {k: str(v) for k, v in vars(args).items() if k != "phase"},
        "lm_eval_version": theirs["version"],
        "runs": runs,
        "median": med,
        "speedup_wall": statistics.median(r["lm_eval_wall_s"] / r["ours_wall_s"] for r in runs),
        "speedup_decode": statistics.median(r["lm_eval_decode_s"] / r["ours_decode_s"] for r in runs),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(markdown(summary))


def markdown(summary: dict) -> str:
    m = summary["median"]
    return "\n".join(
        [
            "| | Coral | lm-eval |",
            "|---|---|---|",
            f"| exact match | {m['ours_accuracy']:.3f} | {m['exact_match_flexible']:.3f} (flexible-extract), "
            f"{m['exact_match_strict']:.3f} (strict-match), {m['lm_eval_texts_coral_extractor']:.3f} "
            "(its texts, Coral's extractor) |",
            f"| wall per run, s (median) | {m['ours_wall_s']:.1f} | {m['lm_eval_wall_s']:.1f} |",
            f"| decoding phase, s (median) | {m['ours_decode_s']:.1f} | {m['lm_eval_decode_s']:.1f} |",
            "",
            f"Speedup (median of paired runs): end to end **{summary['speedup_wall']:.2f}x**, decoding "
            f"{summary['speedup_decode']:.2f}x. Identical texts: {m['identical_texts']:.1%}; same correctness: "
            f"{m['same_correctness']:.1%}.",
        ]
    )


if __name__ == "__main__":
    main()
