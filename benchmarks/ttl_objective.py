"""TTL objective, measured once: S(x) * log PPL(x) (our default, TLM's form) against
S(x) * PPL(x) (DeGAML Eq. 12 as written), from the same fresh LoRA of the cpu preset's model,
the same support inputs and the same TTL action. The choice is made on validation; test is
reported once for each.

    python benchmarks/ttl_objective.py --data-dir ../shared/datasets [--task arc_easy]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from coral_env.backend.config import BackendConfig
from coral_env.backend.lora import AdapterLayout, attach_lora
from coral_env.backend.models import load_model
from coral_env.strategies.context import StrategyContext, TTLConfig
from coral_env.strategies.runners import execute
from coral_env.strategies.schema import TTLStrategy
from coral_env.tasks import load_task, preset_split_sizes


def paired(base: np.ndarray, other: np.ndarray) -> str:
    fixed, broken = int(((~base) & other).sum()), int((base & ~other).sum())
    return f"+{fixed} / -{broken}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--task", default="arc_easy")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).with_name("ttl_objective.md")))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    backend = BackendConfig.preset("cpu")
    model, tok = load_model(backend.model, backend.dtype, backend.device)
    model = attach_lora(model, backend.lora, seed=0)
    layout = AdapterLayout.from_model(model, backend.token_dim)
    init = layout.get_flat()
    splits = load_task(args.task, args.data_dir, seed=0, sizes=preset_split_sizes("cpu"))
    strategy = TTLStrategy(ttl_steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size)
    results: dict[str, dict] = {}
    for name in ("base", "log_ppl", "ppl"):
        layout.set_flat(init)
        ctx = StrategyContext(
            model,
            tok,
            layout,
            args.task,
            splits.support,
            style=backend.prompt_style,
            scoring=backend.scoring,
            ttl=TTLConfig(objective=name if name != "base" else "log_ppl"),
        )
        row: dict = {}
        for split in ("validation", "test"):
            layout.set_flat(init)
            if name == "base":
                result, cost = ctx.evaluate(splits.split(split)), {}
            else:
                outcome = execute(strategy, ctx, splits.split(split))
                result, cost = outcome.result, outcome.cost
            row[split] = {
                "accuracy": result.accuracy,
                "ci95": list(result.ci95),
                "correct": result.correct.tolist(),
                "cost": {k: v for k, v in cost.items() if k != "seconds"},
            }
            print(name, split, round(result.accuracy, 4), row[split]["cost"], file=sys.stderr, flush=True)
        results[name] = row
    layout.set_flat(init)
    chosen = max(("log_ppl", "ppl"), key=lambda n: results[n]["validation"]["accuracy"])
    base = {s: np.array(results["base"][s]["correct"], dtype=bool) for s in ("validation", "test")}
    lines = [
        "# TTL objective: S·logPPL vs S·PPL (DeGAML Eq. 12)",
        "",
        f"`python benchmarks/ttl_objective.py {' '.join(sys.argv[1:])}` on {platform.machine()} "
        f"({args.threads} threads, torch {torch.__version__}), {time.strftime('%Y-%m-%d')}, "
        f"{time.perf_counter() - start:.0f} s. Model: the cpu preset's ({backend.model}), a fresh LoRA "
        f"(PEFT init, seed 0); task {args.task} at the cpu preset's splits (split seed 0); TTL action "
        f"{strategy.canonical_json()} on the {len(splits.support)} support inputs; S(x) = exp(logPPL - log P0), "
        "P0 = e^3, zero at or under P0. One run each (TTL is deterministic here: the same shuffle seed).",
        "",
        "| objective | validation acc [95% CI] | vs base (val, fixed/broken) | test acc [95% CI] | vs base (test) "
        "| first / last TTL loss | skipped steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        v, t = row["validation"], row["test"]
        cost = v["cost"]
        loss = (
            f"{cost['ttl_loss_first']:.3g} / {cost['ttl_loss_last']:.3g}"
            if cost.get("ttl_loss_first") is not None
            else "-"
        )
        vs_v = "-" if name == "base" else paired(base["validation"], np.array(v["correct"], dtype=bool))
        vs_t = "-" if name == "base" else paired(base["test"], np.array(t["correct"], dtype=bool))
        lines.append(
            f"| {name} | {v['accuracy']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] | {vs_v} | "
            f"{t['accuracy']:.3f} [{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}] | {vs_t} | {loss} | "
            f"{cost.get('skipped_steps', '-')} |"
        )
    lines += ["", f"Chosen on validation: **{chosen}** (ties go to log_ppl, the default)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(results))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
