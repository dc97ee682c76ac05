"""Generator positive control at the cpu preset (benchmarks/controls.md).

The control family (``coral_env/tasks/controls.py``): eight arithmetic members, add or subtract
in four phrasings each, whose choices hold both the sum and the difference. Collection,
the generator and the CVAE train on the six training members only; the two held-out members
(one phrasing of each operation) are never seen by them. Their own LoRAs are collected too, as
the reference of what a task LoRA reaches, and never feed any other stage.

On each held-out member's test split (all 300 questions): the base model, the mean adapter of
the six training members, the generated adapter (two disjoint support batches), the generated
adapter aligned by the CVAE, and the member's own LoRA; paired bootstrap 95% CIs of the
differences, per member and pooled. On every member: base vs own LoRA (is there something to
learn?). Resumable: stages through their own state files, evaluations through the results
JSON (one entry per task and method). Run:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/controls.py --artifacts artifacts/controls --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from coral_env.backend.evaluator import evaluate  # noqa: E402
from coral_env.backend.io import atomic_write_json  # noqa: E402
from coral_env.backend.metrics import paired_bootstrap_ci  # noqa: E402
from coral_env.setup import ArtifactPaths, CollectionConfig, GeneratorTrainingConfig, collect, pretrain_generator  # noqa: E402
from coral_env.setup.cvae_data import build_vectorizer  # noqa: E402
from coral_env.setup.pretrain_cvae import CVAETrainingConfig, pretrain_cvae  # noqa: E402
from coral_env.tasks import (  # noqa: E402
    GENERATOR_CONTROL,
    GENERATOR_CONTROL_HELDOUT,
    GENERATOR_CONTROL_TRAIN,
    input_prompts,
    load_task,
)

HELDOUT_METHODS = ("base", "mean", "generated", "generated_batch2", "aligned", "own")
LABELS = {
    "base": "base model",
    "mean": "mean adapter (6 training members)",
    "generated": "generated (support batch 1)",
    "generated_batch2": "generated (support batch 2)",
    "aligned": "generated + CVAE",
    "own": "own LoRA (reference)",
}
COMPARISONS = (
    ("generated", "mean"),
    ("generated", "base"),
    ("aligned", "generated"),
    ("aligned", "mean"),
    ("own", "base"),
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", default="artifacts/controls", help="artifacts root of this control run")
    p.add_argument("--out", default="benchmarks/controls_results.json", help="results JSON (resumable)")
    p.add_argument("--n-test", type=int, default=300, help="test questions per task")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--report-only", action="store_true", help="rewrite the tables from the results JSON")
    return p.parse_args()


def paired(evals: dict, tasks: list[str], a: str, b: str) -> dict:
    """Mean accuracy difference a - b over the tasks' questions, with a paired bootstrap 95% CI."""
    after, before = ([c for t in tasks for c in evals[t][m]["correct"]] for m in (a, b))
    lo, hi = paired_bootstrap_ci(before, after)
    return {"diff": float(np.mean(after) - np.mean(before)), "ci": [lo, hi], "n": len(after)}


def run_stages(root: Path, timings: dict):
    t0 = time.perf_counter()
    collect(CollectionConfig.preset("cpu"), list(GENERATOR_CONTROL), root)
    timings["collect_s_last_invocation"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    generator = pretrain_generator(GeneratorTrainingConfig.preset("cpu"), root, list(GENERATOR_CONTROL_TRAIN))
    timings["generator_s_last_invocation"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    cvae_config = CVAETrainingConfig.preset("cpu")
    cvae = pretrain_cvae(cvae_config, root, list(GENERATOR_CONTROL_TRAIN))
    timings["cvae_s_last_invocation"] = round(time.perf_counter() - t0, 1)
    return generator, cvae, cvae_config


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    if args.report_only:
        write_report(results, out)
        return
    results.setdefault("meta", {}).update(
        {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"threads {args.threads}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "n_test": args.n_test,
            "train_members": list(GENERATOR_CONTROL_TRAIN),
            "heldout_members": list(GENERATOR_CONTROL_HELDOUT),
        }
    )
    timings = results.setdefault("timings", {})
    root = Path(args.artifacts)
    generator, cvae, cvae_config = run_stages(root, timings)
    atomic_write_json(out, results)

    paths = ArtifactPaths(root, "cpu")
    vectorizer = build_vectorizer(paths, GENERATOR_CONTROL_TRAIN[0], cvae_config)
    model, tok, layout = vectorizer.model, vectorizer.tokenizer, vectorizer.layout
    phase2_means = {t: paths.load_checkpoints(t, (2,))[0].mean(0) for t in GENERATOR_CONTROL}
    mean_adapter = torch.stack([phase2_means[t] for t in GENERATOR_CONTROL_TRAIN]).mean(0)
    n_prompts = generator.config.num_prompts
    evals = results.setdefault("eval", {})
    distances = results.setdefault("distances", {})
    for task in GENERATOR_CONTROL:
        splits = load_task(task)
        own = paths.load_checkpoints(task)[0][-1]
        if task in GENERATOR_CONTROL_HELDOUT:
            questions = [ex.question for ex in splits.support]
            generated = generator.generate_adapter(questions[:n_prompts])
            tv_prompts = input_prompts(splits.support[: cvae_config.tv_prompts], "plain", tok, task=task)
            aligned = cvae.align(generated, vectorizer(generated, tv_prompts))
            vectors = {
                "mean": mean_adapter,
                "generated": generated,
                "generated_batch2": generator.generate_adapter(questions[n_prompts : 2 * n_prompts]),
                "aligned": aligned,
                "own": own,
            }
            distances[task] = {name: float((v - phase2_means[task]).norm()) for name, v in vectors.items()}
            methods = HELDOUT_METHODS
        else:
            vectors, methods = {"own": own}, ("base", "own")
        test = splits.test[: args.n_test]
        for method in methods:
            if method in evals.get(task, {}):
                continue
            t0 = time.perf_counter()
            if method == "base":
                with model.disable_adapter():
                    res = evaluate(model, tok, test, task=task)
            else:
                layout.set_flat(vectors[method])
                res = evaluate(model, tok, test, task=task)
            evals.setdefault(task, {})[method] = res.summary() | {
                "correct": res.correct.astype(int).tolist(),
                "eval_s": round(time.perf_counter() - t0, 1),
            }
            atomic_write_json(out, results)
            print(f"{task:10s} {method:17s} acc {res.accuracy:.3f}", flush=True)
    write_report(results, out)


def write_report(results: dict, out: Path) -> None:
    evals = results["eval"]
    heldout = list(GENERATOR_CONTROL_HELDOUT)
    results["differences"] = {
        f"{a}_vs_{b}": {"pooled": paired(evals, heldout, a, b), **{t: paired(evals, [t], a, b) for t in heldout}}
        for a, b in COMPARISONS
    }
    results["own_vs_base_all_members"] = {t: paired(evals, [t], "own", "base") for t in GENERATOR_CONTROL}
    atomic_write_json(out, results)
    summary_path = out.with_name("controls_summary.json")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    pooled = results["differences"]
    summary.update(
        {
            "generator_vs_mean": pooled["generated_vs_mean"]["pooled"],
            "generator_vs_base": pooled["generated_vs_base"]["pooled"],
            "cvae_vs_generator": pooled["aligned_vs_generated"]["pooled"],
        }
    )
    atomic_write_json(summary_path, summary)
    print(markdown(results))


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}"


def markdown(results: dict) -> str:
    evals, diffs = results["eval"], results["differences"]
    lines = [
        "| member | " + " | ".join(LABELS[m] for m in HELDOUT_METHODS) + " |",
        "|---|" + "---|" * len(HELDOUT_METHODS),
    ]
    for task in GENERATOR_CONTROL_HELDOUT:
        cells = []
        for m in HELDOUT_METHODS:
            e = evals[task][m]
            lo, hi = e["ci95"]
            cells.append(f"{e['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append(f"| {task} (held out) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| difference (points) | pooled [95% paired CI] | " + " | ".join(GENERATOR_CONTROL_HELDOUT) + " |",
        "|---|---|" + "---|" * len(GENERATOR_CONTROL_HELDOUT),
    ]
    for a, b in COMPARISONS:
        d = diffs[f"{a}_vs_{b}"]
        cells = [
            f"{_pct(d[t]['diff'])} [{_pct(d[t]['ci'][0])}, {_pct(d[t]['ci'][1])}]" for t in GENERATOR_CONTROL_HELDOUT
        ]
        p = d["pooled"]
        lines.append(
            f"| {LABELS[a]} - {LABELS[b]} | {_pct(p['diff'])} [{_pct(p['ci'][0])}, {_pct(p['ci'][1])}] | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "| member | role | base | own LoRA | own - base [95% paired CI] |", "|---|---|---|---|---|"]
    for task in GENERATOR_CONTROL:
        d = results["own_vs_base_all_members"][task]
        role = "held out" if task in GENERATOR_CONTROL_HELDOUT else "train"
        lines.append(
            f"| {task} | {role} | {evals[task]['base']['accuracy']:.3f} | {evals[task]['own']['accuracy']:.3f} "
            f"| {_pct(d['diff'])} [{_pct(d['ci'][0])}, {_pct(d['ci'][1])}] |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
