"""Can the policy tell tasks apart from its observation? Nearest-context task identification.

For every task, two contexts are written from two disjoint halves of its support split (even
and odd positions: different verbatim examples, facts measured on different questions, and,
with ``--describe``, descriptions written from different examples). Every context is embedded
with the packaged sentence encoder (all-MiniLM-L6-v2, the one the SB3 wrappers use; it reads
the first 256 word pieces); a context is identified when its nearest other context (cosine) is
its own task's other context. Accuracy over all 2 x tasks contexts, per context variant (the
shipped context and ablations of its parts), for each split seed in ``--seeds`` (different
support samples).

    python benchmarks/context_id.py --data-dir ../shared/datasets --out benchmarks/context_id.md
    python benchmarks/context_id.py --describe          # also with LLM descriptions (slow)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

from coral_env.env.contexts import (
    EXAMPLE_BUDGET,
    N_CONTEXT_EXAMPLES,
    compose_context,
    example_block,
    facts_line,
    format_line,
    labeled_support,
    statement_line,
)
from coral_env.env.task_shape import TaskShape
from coral_env.tasks import TaskSplits, list_tasks, load_task, preset_split_sizes

OFFLINE_TASKS = (
    "arc_challenge",
    "arc_easy",
    "hellaswag",
    "boolq",
    "piqa",
    "winogrande",
    "social_i_qa",
    "gsm8k",
    "math",
)


def default_tasks() -> list[str]:
    """The nine offline benchmark tasks plus every built-in synthetic and control task."""
    synthetic = [t for t in list_tasks() if t.startswith(("syn_", "ctl_"))]
    return list(OFFLINE_TASKS) + synthetic


def halves(splits: TaskSplits) -> tuple[TaskSplits, TaskSplits]:
    """Two views of the task whose support sets (and so labeled examples) are disjoint."""
    a, b = splits.support[0::2], splits.support[1::2]
    n = max(1, splits.n_labeled_support // 2)
    return (
        dataclasses.replace(splits, support=a, n_labeled_support=min(n, len(a))),
        dataclasses.replace(splits, support=b, n_labeled_support=min(n, len(b))),
    )


SAME_SOURCE = ("arc_easy", "arc_challenge")  # one question source split by difficulty only


def _examples(s: TaskSplits, k: int = N_CONTEXT_EXAMPLES, budget: int = EXAMPLE_BUDGET, shaped: bool = True) -> str:
    shape = TaskShape.measure(s.support, labeled_support(s)) if shaped else None
    return example_block(labeled_support(s), k, budget, shape)


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


def _head(s: TaskSplits) -> str:
    return statement_line(s) + "\n" + facts_line(s)


def _previous(s: TaskSplits) -> str:
    """The context before task shapes (plain examples in 900 characters, format, three facts)."""
    shape = TaskShape.measure(s.support, labeled_support(s))
    facts = shape.facts()[:3] + (["the question has a blank (_) to fill"] if shape.blank else [])
    return _join(_examples(s, budget=900, shaped=False), format_line(s), "Task facts: " + "; ".join(facts) + ".")


# (description, splits) -> context text; the first row is what the env ships, the rest ablations
VARIANTS = {
    "full context": lambda d, s: compose_context(d, s),
    "previous context": lambda d, s: _previous(s),
    "without statement": lambda d, s: _join(_examples(s), format_line(s), facts_line(s)),
    "without facts": lambda d, s: _join(_examples(s), format_line(s), statement_line(s)),
    "plain example labels": lambda d, s: _join(_examples(s, shaped=False), format_line(s), _head(s)),
    "statement + facts first": lambda d, s: _join(_head(s), _examples(s), format_line(s)),
    "examples in 900 chars": lambda d, s: _join(_examples(s, budget=900), format_line(s), _head(s)),
    "examples in 450 chars": lambda d, s: _join(_examples(s, budget=450), format_line(s), _head(s)),
    "2 examples in 400 chars": lambda d, s: _join(_examples(s, 2, 400), format_line(s), _head(s)),
    "4 examples in 800 chars": lambda d, s: _join(_examples(s, 4, 800), format_line(s), _head(s)),
    "examples only": lambda d, s: _examples(s),
    "format + statement + facts": lambda d, s: _join(format_line(s), _head(s)),
}


def identification(texts: list[str], labels: list[str], encoder) -> tuple[float, list[tuple[str, str]]]:
    """Share of texts whose nearest other text (cosine) has the same label; and the misses."""
    emb = torch.nn.functional.normalize(torch.as_tensor(encoder.encode(texts)), dim=1)
    sim = emb @ emb.T
    sim.fill_diagonal_(-2.0)
    nearest = sim.argmax(dim=1).tolist()
    misses = [(labels[i], labels[j]) for i, j in enumerate(nearest) if labels[j] != labels[i]]
    return 1.0 - len(misses) / len(texts), misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--tasks", default=None, help="comma-separated (default: 9 offline + synthetic)")
    parser.add_argument("--preset", default="cpu", help="split sizes of this preset")
    parser.add_argument(
        "--seeds", default="0,1,2,3,4", help="comma-separated split seeds; the first one's misses are listed"
    )
    parser.add_argument(
        "--describe", action="store_true", help="also write LLM descriptions (--context-model) for each half"
    )
    parser.add_argument("--context-model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--out", default="benchmarks/context_id.md")
    args = parser.parse_args(argv)
    from sentence_transformers import SentenceTransformer

    from coral_env.agents.encoder import resolve_encoder_path

    tasks = args.tasks.split(",") if args.tasks else default_tasks()
    seeds = [int(x) for x in args.seeds.split(",")]
    sizes = preset_split_sizes(args.preset)
    views = {seed: {t: halves(load_task(t, args.data_dir, seed=seed, sizes=sizes)) for t in tasks} for seed in seeds}
    descriptions = {seed: {name: ("", "") for name in tasks} for seed in seeds}
    describe_seconds = None
    if args.describe:
        from coral_env.backend.models import load_model
        from coral_env.env.contexts import write_description

        model, tokenizer = load_model(args.context_model, "auto", "cpu")
        start = time.perf_counter()
        for seed in seeds:
            for name in tasks:
                descriptions[seed][name] = tuple(
                    write_description(model, tokenizer, labeled_support(s), s.kind) for s in views[seed][name]
                )
        describe_seconds = time.perf_counter() - start
        VARIANTS["description only"] = lambda d, s: d
    encoder = SentenceTransformer(resolve_encoder_path(None), device="cpu")
    rows, examples = [], {}
    for variant, build in VARIANTS.items():
        for with_description in (False, True) if args.describe and variant == "full context" else (False,):
            label = variant + (" (with LLM description)" if with_description else "")
            row = {"variant": label, "accuracy_per_seed": []}
            for seed in seeds:
                texts, labels = [], []
                for name in tasks:
                    shown = with_description or variant == "description only"
                    written = descriptions[seed][name] if shown else ("", "")
                    for d, s in zip(written, views[seed][name]):
                        texts.append(build(d, s))
                        labels.append(name)
                acc, misses = identification(texts, labels, encoder)
                row["accuracy_per_seed"].append(acc)
                if seed != seeds[0]:
                    continue
                family_misses = [m for m in misses if {m[0], m[1]} != set(SAME_SOURCE)]
                pieces = [len(encoder.tokenizer(t)["input_ids"]) for t in texts]
                row.update(
                    accuracy=acc,
                    n=len(texts),
                    misses=misses,
                    family_accuracy=1.0 - len(family_misses) / len(texts),
                    truncated=sum(p > encoder.max_seq_length for p in pieces),
                    mean_chars=sum(map(len, texts)) / len(texts),
                )
                if variant == "full context":
                    examples[label] = dict(zip(labels[::2], texts[::2]))
            rows.append(row)
    write_report(Path(args.out), rows, examples, tasks, seeds, encoder.max_seq_length, args, describe_seconds)
    summary = {r["variant"]: r["accuracy"] for r in rows}  # first seed; landscape.py reads "full context"
    summary["per_seed"] = {r["variant"]: r["accuracy_per_seed"] for r in rows}
    summary["seeds"] = seeds
    Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def write_report(out: Path, rows: list[dict], examples: dict, tasks: list[str], seeds, limit, args, seconds) -> None:
    lines = [
        "# Task identification from the context",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}. "
        f"Command: `python {' '.join(sys.argv)}`.",
        "",
        f"{len(tasks)} tasks ({', '.join(tasks)}); two contexts per task from disjoint halves of the "
        f"{args.preset}-preset support split (even / odd positions: different verbatim examples, facts "
        "measured on different questions). Embedded with the packaged all-MiniLM-L6-v2; a context counts "
        "as identified when its nearest other context (cosine) belongs to the same task. Goal: >= 90%. "
        f"Columns 2-6 and the misses are for split seed {seeds[0]}; the last column repeats the measurement "
        f"on the support splits of seeds {', '.join(map(str, seeds))} (mean (per seed)). The shipped "
        "composition was chosen on seeds 0-2 among these rows; seeds 3 and 4 were not looked at "
        'before. "previous context" is the context before task shapes (plain examples in 900 '
        "characters, format, kind / answers / length facts).",
        "",
        f"| context variant | identified | ARC-E/ARC-C as one | contexts | mean chars | over {limit} word pieces "
        "| identified, all seeds | misses (task -> nearest) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        misses = ", ".join(f"{a} -> {b}" for a, b in r["misses"])
        per_seed = r["accuracy_per_seed"]
        spread = f"{sum(per_seed) / len(per_seed):.1%} ({', '.join(f'{a:.1%}' for a in per_seed)})"
        lines.append(
            f"| {r['variant']} | {r['accuracy']:.1%} | {r['family_accuracy']:.1%} | {r['n']} | {r['mean_chars']:.0f} "
            f"| {r['truncated']} | {spread} | {misses or '-'} |"
        )
    if seconds is not None:
        lines += ["", f"LLM descriptions ({args.context_model}): {seconds:.0f} s for {2 * len(tasks) * len(seeds)}."]
    else:
        lines += [
            "",
            "Measured without the LLM description (`--describe` adds it; the 0.5B writer costs "
            "tens of seconds per context on this shared CPU). The env appends the description after "
            "these parts, so the encoder's first 256 word pieces hold what these rows measure.",
        ]
    key = next(iter(examples))
    lines += ["", f"## Three contexts ({key}, seed {seeds[0]}, first half)", ""]
    for name in [t for t in ("arc_easy", "gsm8k", "syn_parity") if t in examples[key]][:3]:
        lines += [f"**{name}**", "", "```text", examples[key][name], "```", ""]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
