"""How different are the m adapters TTS ensembles? Mean pairwise L2 distance of one call's adapters.

For a task, m prompt batches are drawn as TTS draws them (``coral_env.strategies.tts.sample_batches``)
at two support/prompt ratios: the preset's own (cpu: 64 support prompts, 16 per batch) and the
paper preset's (support = prompts per batch: the support cut to one batch). Each batch is turned
into an adapter by the generator alone and by generator + CVAE (the env's path); the table gives
the mean pairwise distance next to the adapters' mean norm.

    python benchmarks/tts_diversity.py --preset cpu --artifacts artifacts --data-dir ../shared/datasets \\
        --task syn_parity --out benchmarks/tts_diversity.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--artifacts", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--task", default="syn_parity")
    p.add_argument("--m", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/tts_diversity.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from coral_env.env.runtime import CoralRuntime, EnvConfig
    from coral_env.strategies.tts import mean_pairwise_distance, sample_batches

    runtime = CoralRuntime.get(EnvConfig(preset=args.preset, artifacts=args.artifacts, data_dir=args.data_dir))
    texts = [ex.question for ex in runtime.splits(args.task).support]
    generator = runtime.generator_for(args.task)
    size = generator.config.num_prompts
    rows = []
    for shape, pool in (
        (f"{args.preset} ({len(texts)} support, {size} per batch)", texts),
        (f"paper ratio (support cut to {size} = {size} per batch)", texts[:size]),
    ):
        batches = sample_batches(len(pool), args.m, size, seed=0)
        generated = [generator.generate_adapter([pool[i] for i in b]) for b in batches]
        aligned = [runtime.adapter_for_prompts(args.task, [pool[i] for i in b])[0] for b in batches]
        for path, adapters in (("generator", generated), ("generator + CVAE", aligned)):
            norm = float(torch.stack([a.float().norm() for a in adapters]).mean())
            rows.append((shape, path, mean_pairwise_distance(adapters), norm))
    lines = [
        "# TTS adapter diversity",
        "",
        f"Machine: {platform.machine()}, {args.threads} torch thread(s). Command: "
        f"`python benchmarks/tts_diversity.py {' '.join(sys.argv[1:])}`. Task {args.task}, m = {args.m}, "
        "split seed 0, strategy seed 0 (deterministic: one run).",
        "",
        "| split shape | adapters from | mean pairwise L2 | mean adapter norm | ratio |",
        "|---|---|---|---|---|",
    ]
    for shape, path, dist, norm in rows:
        lines.append(f"| {shape} | {path} | {dist:.3g} | {norm:.3g} | {dist / norm:.2e} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
