#!/usr/bin/env python
"""Run lm-evaluation-harness (lm_eval 0.4.13) on local ARC-Easy as a peer for our evaluator.

What it does
  1. Sets offline / thread env vars (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1, OMP_NUM_THREADS=N)
     before torch is imported.
  2. Renders tasks/arc_easy_local.yaml with the absolute path of the JSONL (--data) into
     <output-dir>/task/, so the task used is stored next to its results.
  3. Runs lm-eval's own CLI in-process (equivalent command printed; see README) with
     --model hf, dtype=bfloat16, device cpu, --limit, --batch_size, --log_samples, while
     timing model load, the loglikelihood phase (tokenization + forward passes) and the
     forward-pass part alone (HFLM._loglikelihood_tokens).
  4. Leaves in <output-dir>:
       results.json                 lm-eval's aggregated results JSON (unchanged content)
       predictions.jsonl            one line per question (compact, from lm-eval's samples log):
                                    doc_id, id, answerKey, target, per-choice loglikelihood and
                                    is_greedy, choice char lengths, pred / pred_norm, acc, acc_norm
       timing.json                  wall times, versions, settings, the equivalent CLI command
       task/arc_easy_local.yaml     the rendered task
     lm-eval's raw samples file (several MB, mostly repeated prompt strings) is deleted unless
     --keep-raw-samples is given; everything needed item-by-item is in predictions.jsonl.

Example (from the repo root, fresh shell):
  OMP_NUM_THREADS=2 python benchmarks/lm_eval/run_lm_eval.py --output-dir runs/lm_eval
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
DEFAULT_MODEL = Path("~/.cache/coral/models/smollm2-135m-instruct").expanduser()
DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "datasets" / "arc_easy" / "test.jsonl").resolve()
TASK_TEMPLATE = HERE / "tasks" / "arc_easy_local.yaml"
TASK_NAME = "arc_easy_local"
DEFAULT_BATCH_SIZE = "16"  # fastest of 8/16/32/auto measured on the 2-core box (see README)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", required=True, type=Path, help="where results/predictions/timing go")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="HF model folder (default: %(default)s)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ARC-Easy test JSONL (default: %(default)s)")
    p.add_argument("--limit", type=int, default=500, help="first N questions in file order (default: %(default)s)")
    p.add_argument(
        "--batch-size", default=DEFAULT_BATCH_SIZE, help="lm-eval --batch_size (int or 'auto'; default: %(default)s)"
    )
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "2")),
        help="torch/OpenMP threads (default: $OMP_NUM_THREADS or 2)",
    )
    p.add_argument("--keep-raw-samples", action="store_true", help="keep lm-eval's full samples_*.jsonl")
    return p.parse_args()


def set_env(threads: int) -> None:
    # Must happen before torch / transformers / datasets are imported.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def render_task(data: Path, task_dir: Path, template: Path = TASK_TEMPLATE) -> Path:
    """Write ``template`` into ``task_dir`` with its one ``test:`` data file replaced by ``data``."""
    lines = template.read_text().splitlines(keepends=True)
    out, n = [], 0
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith("test:") and not stripped.startswith("test_split"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}test: {json.dumps(str(data))}\n")
            n += 1
        else:
            out.append(line)
    if n != 1:
        raise RuntimeError(f"expected exactly one 'test:' data_files line in {template}, found {n}")
    task_dir.mkdir(parents=True, exist_ok=True)
    dst = task_dir / template.name
    dst.write_text("".join(out))
    return dst


class Timer:
    """Accumulating wall-clock timer wrapped around a method of a class."""

    def __init__(self, cls, name: str):
        self.total = 0.0
        self.calls = 0
        orig = getattr(cls, name)
        timer = self

        def wrapped(*a, **kw):
            t0 = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                timer.total += time.perf_counter() - t0
                timer.calls += 1

        wrapped.__wrapped__ = orig
        setattr(cls, name, wrapped)


def compact_samples(raw: Path, dst: Path) -> dict:
    n = acc = acc_norm = 0
    with raw.open() as f, dst.open("w") as g:
        for line in f:
            s = json.loads(line)
            doc = s["doc"]
            choices = doc["choices"]["text"]
            # lm-eval stringifies the (loglikelihood, is_greedy) tuples in its samples log:
            # [["-23.5", "False"], ...]; bool("False") would be True, so parse explicitly.
            lls = [float(r[0]) for r in s["filtered_resps"]]
            greedy = [str(r[1]) == "True" for r in s["filtered_resps"]]
            # lm-eval's own rule (api/task.py, multiple_choice): argmax of ll, and of ll / len(choice text)
            # (choice text = doc_to_choice string, i.e. without the leading target_delimiter space).
            lens = [len(c) for c in choices]
            pred = max(range(len(lls)), key=lambda i: (lls[i], -i))
            pred_norm = max(range(len(lls)), key=lambda i: (lls[i] / lens[i], -i))
            rec = {
                "doc_id": s["doc_id"],
                "id": doc.get("id"),
                "answerKey": doc.get("answerKey"),
                "target": int(s["target"]),
                "ll": lls,
                "is_greedy": greedy,
                "choice_chars": lens,
                "pred": pred,
                "pred_norm": pred_norm,
                "acc": float(s["acc"]),
                "acc_norm": float(s["acc_norm"]),
            }
            # consistency check against lm-eval's metric values
            assert float(pred == rec["target"]) == rec["acc"], rec
            assert float(pred_norm == rec["target"]) == rec["acc_norm"], rec
            g.write(json.dumps(rec) + "\n")
            n += 1
            acc += rec["acc"]
            acc_norm += rec["acc_norm"]
    return {"n": n, "acc": acc / max(n, 1), "acc_norm": acc_norm / max(n, 1)}


def main() -> int:
    args = parse_args()
    set_env(args.threads)

    out_dir = args.output_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_dir = out_dir / "raw"
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    model = args.model.expanduser().resolve()
    data = args.data.expanduser().resolve()
    if not (model / "config.json").is_file():
        raise SystemExit(f"model folder not found: {model}")
    if not data.is_file():
        raise SystemExit(f"data file not found: {data}")
    task_yaml = render_task(data, out_dir / "task")

    import torch

    torch.set_num_threads(args.threads)
    import datasets
    import lm_eval
    import transformers
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.models.huggingface import HFLM

    t_load = Timer(HFLM, "__init__")
    t_ll = Timer(HFLM, "loglikelihood")
    t_fwd = Timer(HFLM, "_loglikelihood_tokens")

    cli = [
        "lm_eval",
        "run",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype={args.dtype}",
        "--device",
        "cpu",
        "--include_path",
        str(task_yaml.parent),
        "--tasks",
        TASK_NAME,
        "--num_fewshot",
        "0",
        "--limit",
        str(args.limit),
        "--batch_size",
        str(args.batch_size),
        "--output_path",
        str(raw_dir),
        "--log_samples",
    ]
    env_prefix = f"HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS={args.threads} "
    equivalent = env_prefix + shlex.join(cli)
    print(f"[run_lm_eval] equivalent CLI: {equivalent}", flush=True)
    print(
        f"[run_lm_eval] lm_eval {lm_eval.__version__}, torch {torch.__version__} "
        f"(threads={torch.get_num_threads()}), transformers {transformers.__version__}, "
        f"datasets {datasets.__version__}",
        flush=True,
    )

    sys.argv = cli
    t0 = time.perf_counter()
    cli_evaluate()
    t_eval = time.perf_counter() - t0

    results_files = sorted(raw_dir.rglob("results_*.json"))
    samples_files = sorted(raw_dir.rglob(f"samples_{TASK_NAME}_*.jsonl"))
    if len(results_files) != 1 or len(samples_files) != 1:
        raise SystemExit(f"unexpected lm-eval outputs: {results_files} {samples_files}")
    shutil.copyfile(results_files[0], out_dir / "results.json")
    check = compact_samples(samples_files[0], out_dir / "predictions.jsonl")
    if args.keep_raw_samples:
        shutil.copyfile(samples_files[0], out_dir / "samples_raw.jsonl")
    shutil.rmtree(raw_dir)

    res = json.loads((out_dir / "results.json").read_text())["results"][TASK_NAME]
    acc, acc_norm = res["acc,none"], res["acc_norm,none"]
    assert check["n"] == args.limit, check
    assert abs(check["acc"] - acc) < 1e-9 and abs(check["acc_norm"] - acc_norm) < 1e-9, (check, res)

    timing = {
        "lm_eval_version": lm_eval.__version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "datasets_version": datasets.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "limit": args.limit,
        "model": str(model),
        "data": str(data),
        "equivalent_cli": equivalent,
        "acc": acc,
        "acc_stderr": res.get("acc_stderr,none"),
        "acc_norm": acc_norm,
        "acc_norm_stderr": res.get("acc_norm_stderr,none"),
        "wall_s_process": time.perf_counter() - T_START,
        "wall_s_lm_eval_run": t_eval,
        "wall_s_model_load": t_load.total,
        "wall_s_loglikelihood_phase": t_ll.total,
        "wall_s_loglikelihood_forward": t_fwd.total,
    }
    (out_dir / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")

    print(
        f"[run_lm_eval] acc={acc:.4f} acc_norm={acc_norm:.4f} (n={check['n']}, batch_size={args.batch_size}, "
        f"threads={timing['threads']})"
    )
    print(
        f"[run_lm_eval] wall: process {timing['wall_s_process']:.1f} s | lm-eval run {t_eval:.1f} s | "
        f"model load {t_load.total:.1f} s | loglikelihood phase {t_ll.total:.1f} s "
        f"(forward passes {t_fwd.total:.1f} s)"
    )
    print(f"[run_lm_eval] outputs in {out_dir}: results.json predictions.jsonl timing.json task/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
