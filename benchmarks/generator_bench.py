"""Leave-one-out benchmark of the stage-1 generator at the cpu preset (benchmarks/generator.md).

For each of the six in-domain tasks T: a generator trained on the other five, conditioned on
T's support prompts, against (a) the base model, (c) the mean of the five training tasks'
phase-2 checkpoints ("mean adapter"), (d) T's own collected final checkpoint; test accuracy
with 95% CIs, paired bootstrap CIs of differences, balanced accuracy for two-answer tasks, and
cosine similarities between generated adapters and every task's mean checkpoint.

Every stage resumes: collection and generator training through their own state files,
evaluations through the results JSON (one entry per task and method). Run:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/generator_bench.py --artifacts artifacts --threads 2

``--variant NAME --anchor none`` trains and evaluates generators with other settings on the same
collected checkpoints (under <artifacts>/variants/NAME) for ablations.
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

from coral_env.agents import PromptEncoder  # noqa: E402
from coral_env.backend.evaluator import evaluate  # noqa: E402
from coral_env.backend.io import atomic_write_json  # noqa: E402
from coral_env.backend.lora import AdapterLayout, attach_lora  # noqa: E402
from coral_env.backend.metrics import bootstrap_ci  # noqa: E402
from coral_env.backend.models import load_model  # noqa: E402
from coral_env.setup import ArtifactPaths, CollectionConfig, GeneratorTrainingConfig, collect, pretrain_generator  # noqa: E402
from coral_env.setup.pretrain_generator import task_prompts  # noqa: E402
from coral_env.setup.split_manifest import contract_splits  # noqa: E402
from coral_env.tasks import IN_DOMAIN  # noqa: E402

METHODS = ("base", "generated", "generated_batch2", "mean", "own")
LABELS = {
    "base": "base model",
    "generated": "generated (support batch 1)",
    "generated_batch2": "generated (support batch 2)",
    "mean": "mean adapter (5 training tasks)",
    "own": "own LoRA (target's final checkpoint)",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--out", default="benchmarks/generator_results.json")
    p.add_argument("--figure", default="benchmarks/generator.png")
    p.add_argument("--tasks", default=",".join(IN_DOMAIN))
    p.add_argument(
        "--holdouts",
        default=None,
        help="subset of --tasks to hold out in turn (default: all); each gets a generator trained on the others",
    )
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", default=None, help="train generators under <artifacts>/variants/NAME")
    p.add_argument("--anchor", default=None, choices=("none", "init", "mean"))
    p.add_argument("--gen-steps", type=int, default=None)
    p.add_argument("--noise-std", type=float, default=None)
    p.add_argument("--token-weighting", default=None)
    p.add_argument("--skip-eval", action="store_true", help="collect and train only")
    p.add_argument(
        "--report-only", action="store_true", help="redraw the figure and print the table from the results JSON"
    )
    p.add_argument(
        "--choose",
        default=None,
        help="comma-separated results JSONs of anchor variants: pick the anchor on the held-out "
        "tasks' validation accuracy of the generated adapter and report its test accuracy once",
    )
    p.add_argument(
        "--reuse-from",
        default=None,
        help="results JSON whose base/mean/own evaluations to reuse (they do not depend on "
        "the generator; for variants)",
    )
    return p.parse_args()


def variant_root(artifacts: Path, variant: str | None) -> Path:
    """Generators of a variant live in their own root that shares the collected checkpoints."""
    if not variant:
        return artifacts
    root = artifacts / "variants" / variant / "cpu"
    root.mkdir(parents=True, exist_ok=True)
    for name in ("collect", "layout", "cache"):
        target, link = artifacts / "cpu" / name, root / name
        target.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target.resolve(), target_is_directory=True)
    return root.parent


def timed_collect(tasks: list[str], artifacts: Path, timings: dict) -> None:
    config = CollectionConfig.preset("cpu")
    t0 = time.perf_counter()
    results = collect(config, tasks, artifacts)
    if any(not r.skipped for r in results):
        timings["collect_wall_s_last_invocation"] = round(time.perf_counter() - t0, 1)
    paths = ArtifactPaths(artifacts, "cpu")
    per_task = {}
    for task in tasks:
        rows = [json.loads(line) for line in paths.collect_log(task).read_text().splitlines()]
        per_task[task] = {
            "steps": len(rows),
            "step_seconds_sum": round(sum(r["seconds"] for r in rows), 1),
            "median_step_s": round(float(np.median([r["seconds"] for r in rows])), 3),
        }
    timings["collect"] = per_task


def timed_generators(
    tasks: list[str], holdouts: list[str], root: Path, args, timings: dict, encoder: PromptEncoder | None
):
    config = GeneratorTrainingConfig.preset(
        "cpu", anchor=args.anchor, steps=args.gen_steps, noise_std=args.noise_std, token_weighting=args.token_weighting
    )
    timings["generator_config"] = config.to_dict()
    gens = {}
    for holdout in holdouts:
        t0 = time.perf_counter()
        done_before = (ArtifactPaths(root, "cpu").generator_dir(holdout) / "model.safetensors").exists()
        gen = pretrain_generator(config, root, tasks, holdout=holdout, encoder=encoder)
        encoder = gen.encoder
        log = ArtifactPaths(root, "cpu").generator_dir(holdout) / "log.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        entry = timings.setdefault("generators", {}).setdefault(holdout, {})
        entry.update(
            {
                "steps": config.steps,
                "step_seconds_sum": round(sum(r["seconds"] for r in rows), 1),
                "first_loss": rows[0]["loss"],
                "final_loss": rows[-1]["loss"],
                "params": gen.num_parameters(),
            }
        )
        if not done_before:
            entry["wall_s_incl_data"] = round(time.perf_counter() - t0, 1)
        gens[holdout] = gen
    return gens


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    tasks = [t.strip() for t in args.tasks.split(",")]
    holdouts = [t.strip() for t in args.holdouts.split(",")] if args.holdouts else tasks
    if unknown := [t for t in holdouts if t not in tasks]:
        raise SystemExit(f"--holdouts {','.join(unknown)} not among --tasks {','.join(tasks)}; add them to --tasks")
    artifacts = Path(args.artifacts)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    if args.choose:
        print(anchor_choice([Path(f) for f in args.choose.split(",")]))
        return
    if args.report_only:
        results["task_similarity_delta"] = task_similarity(ArtifactPaths(artifacts, "cpu"), tasks)
        atomic_write_json(out, results)
        evaluated = [t for t in holdouts if t in results.get("eval", {})]
        figure(results, evaluated, Path(args.figure))
        print(markdown_table(results, evaluated))
        return
    results.setdefault("meta", {}).update(
        {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"threads {args.threads}",
            "cpu": _cpu_name(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
            "n_test": args.n_test,
            "variant": args.variant,
            "anchor": args.anchor or GeneratorTrainingConfig.preset("cpu").anchor,
        }
    )
    timings = results.setdefault("timings", {})
    if args.reuse_from:
        other = json.loads(Path(args.reuse_from).read_text())
        for task, entries in other.get("eval", {}).items():
            for method in ("base", "mean", "own"):
                if method in entries:
                    results.setdefault("eval", {}).setdefault(task, {}).setdefault(method, entries[method])

    timed_collect(tasks, artifacts, timings)
    atomic_write_json(out, results)
    root = variant_root(artifacts, args.variant)
    gens = timed_generators(tasks, holdouts, root, args, timings, None)
    atomic_write_json(out, results)
    if args.skip_eval:
        return

    paths = ArtifactPaths(artifacts, "cpu")
    from safetensors.torch import load_file

    init = load_file(str(paths.init_adapter))["adapter"]
    task_means = {t: paths.load_checkpoints(t, (2,))[0].mean(0) for t in tasks}
    finals = {t: paths.load_checkpoints(t)[0][-1] for t in tasks}

    # Generation speed (cpu preset, <= 0.5 s goal): cold = new prompts, warm = cached embeddings.
    gen0 = gens[holdouts[0]]
    fresh = [f"fresh prompt {i} about {holdouts[0]}" for i in range(gen0.config.num_prompts)]
    t0 = time.perf_counter()
    gen0.generate_adapter(fresh)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen0.generate_adapter(fresh)
    timings["generate_adapter_s"] = {"cold": round(cold, 3), "warm": round(time.perf_counter() - t0, 3)}

    model, tok = load_model("smollm2-135m-instruct")
    backend = CollectionConfig.preset("cpu").backend()
    peft = attach_lora(model, backend.lora)
    layout = AdapterLayout.from_model(peft, backend.token_dim)
    n_prompts = gen0.config.num_prompts
    evals = results.setdefault("eval", {})
    cos = results.setdefault("cosine", {})
    for task in holdouts:
        support = task_prompts(paths, task, splits=("support",))
        gen = gens[task]
        vectors = {
            "generated": gen.generate_adapter(support[:n_prompts]),
            "generated_batch2": gen.generate_adapter(support[n_prompts : 2 * n_prompts]),
            "mean": torch.stack([task_means[t] for t in tasks if t != task]).mean(0),
            "own": finals[task],
        }
        g = vectors["generated"]
        cos[task] = {
            "generated_vs_task_mean_full": {t: cosine(g, m) for t, m in task_means.items()},
            "generated_vs_task_mean_delta": {t: cosine(g - init, m - init) for t, m in task_means.items()},
            "mean_adapter_vs_target_delta": cosine(vectors["mean"] - init, task_means[task] - init),
            "generated_vs_mean_adapter_delta": cosine(g - init, vectors["mean"] - init),
            "batch1_vs_batch2_delta": cosine(g - init, vectors["generated_batch2"] - init),
            "dist_generated_to_target": float((g - task_means[task]).norm()),
            "dist_mean_adapter_to_target": float((vectors["mean"] - task_means[task]).norm()),
            "dist_generated_to_mean_adapter": float((g - vectors["mean"]).norm()),
        }
        task_splits = contract_splits(paths, task)
        test = task_splits.test[: args.n_test]
        if "generated" not in results.setdefault("validation", {}).get(task, {}):
            # The anchor is chosen on validation (--choose); test is reported once, for the choice.
            layout.set_flat(vectors["generated"])
            res = evaluate(peft, tok, task_splits.validation, task=task)
            results["validation"].setdefault(task, {})["generated"] = res.summary()
            atomic_write_json(out, results)
        for method in METHODS:
            key = method
            if key in evals.get(task, {}):
                continue
            t0 = time.perf_counter()
            if method == "base":
                with peft.disable_adapter():
                    res = evaluate(peft, tok, test, task=task)
            else:
                layout.set_flat(vectors[method])
                res = evaluate(peft, tok, test, task=task)
            summary = res.summary() | {
                "correct": res.correct.astype(int).tolist(),
                "predictions": [int(p) for p in res.predictions],
                "eval_s": round(time.perf_counter() - t0, 1),
            }
            evals.setdefault(task, {})[key] = summary
            atomic_write_json(out, results)
            print(f"{task:14s} {method:17s} acc {res.accuracy:.3f} {summary.get('balanced_accuracy', '')}", flush=True)
    results["differences"] = differences(evals, holdouts)
    results["task_similarity_delta"] = task_similarity(paths, tasks)
    atomic_write_json(out, results)
    figure(results, holdouts, Path(args.figure))
    print(markdown_table(results, holdouts))


def anchor_choice(files: list[Path]) -> str:
    """The anchor chosen on validation among variant results files (each from one anchor)."""
    from choose import choice_markdown, choose_on_validation

    candidates = {}
    for file in files:
        res = json.loads(file.read_text())
        name = res.get("meta", {}).get("anchor") or file.stem
        val = res.get("validation", {})
        missing = [t for t in res.get("eval", {}) if "generated" not in val.get(t, {})]
        if missing or not val:
            raise ValueError(
                f"{file} has no validation accuracy for {missing or 'any task'}; rerun the benchmark "
                "with this version (it evaluates the generated adapter on validation too)"
            )
        candidates[name] = {
            t: {"validation": val[t]["generated"]["accuracy"], "test": res["eval"][t]["generated"]["accuracy"]}
            for t in val
        }
    return choice_markdown("Generator anchor, chosen on validation", choose_on_validation(candidates))


def task_similarity(paths: ArtifactPaths, tasks: list[str]) -> dict:
    """cosine(mean ckpt S - init, mean ckpt T - init) between the tasks' real phase-2 checkpoints."""
    from safetensors.torch import load_file

    init = load_file(str(paths.init_adapter))["adapter"]
    means = {t: paths.load_checkpoints(t, (2,))[0].mean(0) - init for t in tasks}
    return {s: {t: cosine(means[s], means[t]) for t in tasks} for s in tasks}


def differences(evals: dict, tasks: list[str]) -> dict:
    """Paired bootstrap 95% CIs of accuracy differences on the same test questions."""
    out = {}
    for task in tasks:
        e = evals[task]
        c = {m: np.array(e[m]["correct"], dtype=float) for m in METHODS}
        out[task] = {}
        for a, b in (("generated", "mean"), ("generated", "base"), ("mean", "base"), ("own", "base")):
            d = c[a] - c[b]
            out[task][f"{a}-{b}"] = {"mean": float(d.mean()), "ci95": list(bootstrap_ci(d))}
    return out


def markdown_table(results: dict, tasks: list[str]) -> str:
    evals = results["eval"]
    lines = ["| task | " + " | ".join(LABELS[m] for m in METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for task in tasks:
        cells = []
        for m in METHODS:
            s = evals[task][m]
            cell = f"{s['accuracy']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]"
            if "balanced_accuracy" in s:
                cell += f"<br>bal {s['balanced_accuracy']:.3f}"
            cells.append(cell)
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    avg = [np.mean([evals[t][m]["accuracy"] for t in tasks]) for m in METHODS]
    lines.append("| **average** | " + " | ".join(f"**{a:.3f}**" for a in avg) + " |")
    return "\n".join(lines)


def figure(results: dict, tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals, cos = results["eval"], results["cosine"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1.6, 1]})
    width = 0.16
    x = np.arange(len(tasks))
    for i, m in enumerate(METHODS):
        acc = np.array([evals[t][m]["accuracy"] for t in tasks])
        lo = acc - np.array([evals[t][m]["ci95"][0] for t in tasks])
        hi = np.array([evals[t][m]["ci95"][1] for t in tasks]) - acc
        ax1.bar(x + (i - 2) * width, acc, width, yerr=[lo, hi], capsize=2, label=LABELS[m])
    ax1.set_xticks(x, tasks, rotation=15)
    ax1.set_ylabel(f"test accuracy (n={results['meta']['n_test']}, 95% Wilson CI)")
    ax1.set_ylim(0, 1)
    ax1.legend(fontsize=8, loc="upper left")
    ax1.set_title("Leave-one-out: generator trained on the other five tasks")
    grid = np.array([[cos[h]["generated_vs_task_mean_delta"][t] for t in tasks] for h in tasks])
    im = ax2.imshow(grid, cmap="viridis", vmin=min(0.0, grid.min()), vmax=1)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            ax2.text(
                j,
                i,
                f"{grid[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if grid[i, j] < 0.6 else "black",
            )
    for i in range(len(tasks)):  # the held-out target: never seen by that generator
        ax2.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax2.set_xticks(range(len(tasks)), tasks, rotation=35, ha="right")
    ax2.set_yticks(range(len(tasks)), [f"gen. for {t}" for t in tasks])
    ax2.set_title("cosine(generated - init, task mean ckpt - init)\nred: the held-out target", fontsize=10)
    fig.colorbar(im, ax=ax2, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
