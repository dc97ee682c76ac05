#!/usr/bin/env python
"""Does the alignment CVAE help? Leave-one-out on the six commonsense tasks, cpu preset.

For each held-out task T (the generator and the CVAEs are trained without T), test accuracy of
SmolLM2-135M-Instruct with:
  * base: no adapter;
  * mean checkpoint: the mean of the five training tasks' phase-2 checkpoints ("mean adapter",
    also what an untrained CVAE returns);
  * generated: the stage-1 generator conditioned on T's support prompts;
  * aligned (input / checkpoint): the generated adapter through the CVAE (posterior mean), the
    papers' architecture, trained with target=input (the paper) or target=checkpoint;
  * aligned +basis8 (input / checkpoint): the same with the optional rank-8 principal-direction
    path (``basis_rank=8``, not in the papers).
300 test questions, 95% Wilson CIs, balanced accuracy for boolq, paired bootstrap CIs of
aligned - generated, adapter distances, wall times.

Stage-1 artifacts (collected checkpoints, layout, leave-one-out generators) come from the
generator benchmark's folder (``--stage1``, default ``artifacts``); they are linked into
``--out``/art (and art_basis8), where the CVAEs and the task-vector caches go. Base and mean-
adapter results are read from ``--generator-results`` when present (the same computation);
an adapter whose bf16 weights equal an already evaluated one reuses that result. Everything
resumes: finished CVAEs are loaded, finished evaluations read back from the summary.

Usage (repository root):
  OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 python benchmarks/alignment_bench.py --threads 2
Writes <out>/summary.json, benchmarks/alignment.png; benchmarks/alignment.md holds the numbers.
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

IN_DOMAIN = ["arc_challenge", "arc_easy", "hellaswag", "boolq", "piqa", "winogrande"]
VARIANTS = {"": 0, "_basis8": 8}  # condition suffix -> basis_rank
CONDITIONS = [
    "base",
    "mean_ckpt",
    "generated",
    "aligned_input",
    "aligned_checkpoint",
    "aligned_input_basis8",
    "aligned_checkpoint_basis8",
]
LABELS = {
    "base": "base",
    "mean_ckpt": "mean checkpoint",
    "generated": "generated",
    "aligned_input": "aligned (input)",
    "aligned_checkpoint": "aligned (checkpoint)",
    "aligned_input_basis8": "aligned +basis8 (input)",
    "aligned_checkpoint_basis8": "aligned +basis8 (checkpoint)",
}


def link_stage1(stage1: Path, root: Path, shared_cache: Path | None = None) -> None:
    """Make ``root/cpu`` see the stage-1 collect/, layout/, generator/ (and a shared cache/)."""
    base = root / "cpu"
    base.mkdir(parents=True, exist_ok=True)
    links = {name: (stage1 / "cpu" / name).resolve() for name in ("collect", "layout", "generator")}
    if shared_cache is not None:
        shared_cache.mkdir(parents=True, exist_ok=True)
        links["cache"] = shared_cache.resolve()
    for name, src in links.items():
        if not src.exists():
            raise FileNotFoundError(f"stage-1 folder {src} is missing; run benchmarks/generator_bench.py first")
        if not (base / name).exists():
            (base / name).symlink_to(src, target_is_directory=True)


def paired_bootstrap(a: np.ndarray, b: np.ndarray) -> list[float]:
    """[mean of b - a, 2.5%, 97.5%] over per-example correctness (``metrics.paired_bootstrap_ci``)."""
    from coral_env.backend.metrics import paired_bootstrap_ci

    diff = np.asarray(b, float) - np.asarray(a, float)
    return [float(diff.mean()), *paired_bootstrap_ci(a, b)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage1", default="artifacts", help="artifacts root of the generator benchmark")
    ap.add_argument("--generator-results", default="benchmarks/generator_results.json")
    ap.add_argument("--out", default="runs/alignment")
    ap.add_argument("--figure", default="benchmarks/alignment.png")
    ap.add_argument("--tasks", default=",".join(IN_DOMAIN))
    ap.add_argument("--holdouts", default=None, help="subset of --tasks to hold out (default: all)")
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="print the tables of an existing summary")
    args = ap.parse_args()
    if args.report_only:
        summary = json.loads((Path(args.out) / "summary.json").read_text())
        plot(summary, Path(args.figure))
        print(table(summary), "", diagnostics(summary), "", rank_choice(summary), sep="\n")
        return

    from coral_env.agents import Generator, PromptEncoder
    from coral_env.backend.evaluator import evaluate
    from coral_env.backend.io import atomic_write_json
    from coral_env.backend.lora import adapter_hash
    from coral_env.setup.artifacts import ArtifactPaths
    from coral_env.setup.pretrain_cvae import CVAETrainingConfig, build_vectorizer, pretrain_cvae, task_vector_prompts
    from coral_env.setup.pretrain_generator import task_prompts
    from coral_env.setup.split_manifest import contract_splits

    torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",")
    holdouts = args.holdouts.split(",") if args.holdouts else tasks
    out = Path(args.out)
    roots = {suffix: out / f"art{suffix}" for suffix in VARIANTS}
    for suffix, root in roots.items():
        link_stage1(Path(args.stage1), root, shared_cache=out / "cache")
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"tasks": {}}
    summary["meta"] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "n_test": args.n_test,
    }
    gen_results = {}
    if Path(args.generator_results).exists():
        gen_results = json.loads(Path(args.generator_results).read_text()).get("eval", {})
    configs = {
        (suffix, target): CVAETrainingConfig.preset("cpu", target=target, basis_rank=rank)
        for suffix, rank in VARIANTS.items()
        for target in ("input", "checkpoint")
    }
    summary["cvae_training"] = {f"{t}{s}": c.to_dict() for (s, t), c in configs.items()}

    t0 = time.perf_counter()
    paths = ArtifactPaths(roots[""], "cpu")
    vectorizer = build_vectorizer(paths, tasks[0], configs[("", "input")])
    model, tok, layout = vectorizer.model, vectorizer.tokenizer, vectorizer.layout
    summary["meta"]["model_load_s"] = round(time.perf_counter() - t0, 1)
    encoder = None

    for holdout in holdouts:
        rec = summary["tasks"].setdefault(holdout, {"results": {}, "timings": {}})
        gen = Generator.from_pretrained(paths.generator_dir(holdout), encoder=encoder)
        if encoder is None:
            encoder = PromptEncoder(gen.config.encoder, gen.config.prompt_length, cache_dir=paths.cache_dir)
            gen = Generator.from_pretrained(paths.generator_dir(holdout), encoder=encoder)
        support = task_prompts(paths, holdout, splits=("support",))
        generated = gen.generate_adapter(support[: gen.config.num_prompts])
        t = time.perf_counter()
        tv = vectorizer(
            generated, task_vector_prompts(paths, holdout, tok, limit=configs[("", "input")].tv_prompts, style="plain")
        )
        rec["timings"]["task_vector_s"] = round(time.perf_counter() - t, 2)
        adapters = {"base": torch.zeros(layout.size), "generated": generated}
        for (suffix, target), config in configs.items():
            t = time.perf_counter()
            cvae = pretrain_cvae(config, roots[suffix], tasks, holdout=holdout, vectorizer=vectorizer, generator=gen)
            rec["timings"].setdefault(f"cvae_{target}{suffix}_s", round(time.perf_counter() - t, 1))
            rec[f"cvae_{target}{suffix}"] = {k: v for k, v in cvae.extra.items() if k.endswith("_mse")}
            adapters["mean_ckpt"] = cvae.adapter_mean.clone()
            t = time.perf_counter()
            adapters[f"aligned_{target}{suffix}"] = cvae.align(generated, tv)
            rec["timings"][f"align_{target}{suffix}_s"] = round(time.perf_counter() - t, 3)
        mean, gap = adapters["mean_ckpt"], (generated - adapters["mean_ckpt"]).norm()
        rec["distance_over_gen_to_mean"] = {
            name: {"to_generated": float((a - generated).norm() / gap), "to_mean": float((a - mean).norm() / gap)}
            for name, a in adapters.items()
            if name.startswith("aligned")
        }
        rec["task_vector_norm"] = float(tv.norm())

        task_splits = contract_splits(paths, holdout)
        examples = task_splits.test[: args.n_test]
        val_results = rec.setdefault("validation", {})
        for name in CONDITIONS:  # the basis rank is chosen on validation; test is reported once
            if name.startswith("aligned") and name not in val_results:
                layout.set_flat(adapters[name])
                val_results[name] = evaluate(model, tok, task_splits.validation, task=holdout).summary()
                atomic_write_json(summary_path, summary)
        theirs = gen_results.get(holdout, {})
        by_weights = {}  # hash of the adapter as the bf16 model holds it -> condition evaluated
        for name in CONDITIONS:
            layout.set_flat(adapters[name])
            key = adapter_hash(layout.get_flat())
            if name not in rec["results"]:
                reuse = {"base": "base", "mean_ckpt": "mean"}.get(name)
                if reuse and reuse in theirs:
                    rec["results"][name] = dict(theirs[reuse], source="generator_results.json")
                elif key in by_weights:
                    rec["results"][name] = dict(
                        rec["results"][by_weights[key]], source=f"same weights as {by_weights[key]}"
                    )
                else:
                    res = evaluate(model, tok, examples, task=holdout)
                    rec["results"][name] = res.summary() | {"correct": res.correct.astype(int).tolist()}
                atomic_write_json(summary_path, summary)
                r = rec["results"][name]
                print(
                    f"{holdout:14s} {name:28s} acc {r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
                    f" bal {r.get('balanced_accuracy', '-')} {r.get('source', '')} ({r.get('seconds', 0):.0f} s)",
                    flush=True,
                )
            by_weights.setdefault(key, name)
        if "generated" in theirs:
            rec["generated_in_generator_results"] = theirs["generated"]["accuracy"]
        layout.set_flat(torch.zeros(layout.size))
        res = rec["results"]
        rec["paired"] = {
            f"{b} - {a}": paired_bootstrap(res[a]["correct"], res[b]["correct"])
            for a, b in [("generated", c) for c in CONDITIONS if c.startswith("aligned")]
            + [("base", "generated"), ("mean_ckpt", "generated")]
        }
        atomic_write_json(summary_path, summary)
    summary["meta"]["total_s_this_run"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(summary_path, summary)
    print(rank_choice(summary))
    plot(summary, Path(args.figure))
    print(table(summary))


def rank_choice(summary: dict) -> str:
    """Per reconstruction target, the CVAE basis rank chosen on the held-out tasks' validation
    accuracy of the aligned adapter, with the chosen rank's test accuracy reported once."""
    from choose import choice_markdown, choose_on_validation

    sections = []
    for target in ("input", "checkpoint"):
        candidates = {
            f"basis_rank={rank}": {
                task: {
                    "validation": rec["validation"][f"aligned_{target}{suffix}"]["accuracy"],
                    "test": rec["results"][f"aligned_{target}{suffix}"]["accuracy"],
                }
                for task, rec in summary["tasks"].items()
            }
            for suffix, rank in VARIANTS.items()
        }
        sections.append(
            choice_markdown(
                f"CVAE basis rank (target {target}), chosen on validation", choose_on_validation(candidates)
            )
        )
    return "\n\n".join(sections)


def table(summary: dict) -> str:
    rows = ["| held-out task | " + " | ".join(LABELS[c] for c in CONDITIONS) + " |", "|---|" + "---|" * len(CONDITIONS)]
    for task, rec in summary["tasks"].items():
        cells = []
        for c in CONDITIONS:
            r = rec["results"].get(c)
            cell = "-" if r is None else f"{r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
            if r is not None and task == "boolq" and r.get("balanced_accuracy") is not None:
                cell += f" bal {r['balanced_accuracy']:.3f}"
            cells.append(cell)
        rows.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def diagnostics(summary: dict) -> str:
    """Paired differences to the generated adapter, reconstruction errors, adapter distances."""
    aligned = [c for c in CONDITIONS if c.startswith("aligned")]
    rows = [
        "| held-out task | "
        + " | ".join(f"{LABELS[c]} - generated" for c in aligned)
        + " | generated - base | generated - mean |",
        "|---|" + "---|" * (len(aligned) + 2),
    ]
    for task, rec in summary["tasks"].items():
        pairs = [rec["paired"][f"{c} - generated"] for c in aligned]
        pairs += [rec["paired"]["generated - base"], rec["paired"]["generated - mean_ckpt"]]
        rows.append(f"| {task} | " + " | ".join(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" for m, lo, hi in pairs) + " |")
    rows += [
        "",
        "| held-out task | "
        + " | ".join(f"{t}{s}: recon MSE / d(gen) / d(mean)" for s in VARIANTS for t in ("input", "checkpoint"))
        + " | unaligned input MSE (checkpoint target) |",
        "|---|" + "---|" * 5,
    ]
    for task, rec in summary["tasks"].items():
        cells = []
        for s in VARIANTS:
            for t in ("input", "checkpoint"):
                d = rec["distance_over_gen_to_mean"][f"aligned_{t}{s}"]
                cells.append(f"{rec[f'cvae_{t}{s}']['cvae_mse']:.3f} / {d['to_generated']:.2f} / {d['to_mean']:.2f}")
        cells.append(f"{rec['cvae_checkpoint']['input_mse']:.3f}")
        rows.append(f"| {task} | " + " | ".join(cells) + " |")
    rows += [
        "",
        "| held-out task | " + " | ".join(k.removesuffix("_s") for k in TIMING_KEYS) + " |",
        "|---|" + "---|" * len(TIMING_KEYS),
    ]
    for task, rec in summary["tasks"].items():
        rows.append(
            f"| {task} | " + " | ".join(f"{rec['timings'].get(k, float('nan')):.1f}" for k in TIMING_KEYS) + " |"
        )
    return "\n".join(rows)


TIMING_KEYS = ["task_vector_s", "cvae_input_s", "cvae_checkpoint_s", "cvae_input_basis8_s", "cvae_checkpoint_basis8_s"]


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["tasks"])
    width = 0.8 / len(CONDITIONS)
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for i, c in enumerate(CONDITIONS):
        rs = [summary["tasks"][t]["results"].get(c) for t in tasks]
        acc = np.array([r["accuracy"] if r else np.nan for r in rs])
        err = np.array([[r["accuracy"] - r["ci95"][0], r["ci95"][1] - r["accuracy"]] if r else [0, 0] for r in rs]).T
        x = np.arange(len(tasks)) + (i - (len(CONDITIONS) - 1) / 2) * width
        ax.bar(x, acc, width, yerr=err, capsize=1.5, label=LABELS[c])
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylabel("test accuracy (95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title("Alignment CVAE, leave-one-out, SmolLM2-135M-Instruct, cpu preset")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.07))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
