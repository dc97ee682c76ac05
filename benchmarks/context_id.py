"""Can the policy tell tasks apart from its observation? Nearest-context task identification.

For every task, two contexts are written from two disjoint halves of its support split (even
and odd positions: different verbatim examples, facts measured on different questions, and,
with ``--describe``, descriptions written from different examples). Every context is embedded
with the packaged sentence encoder (all-MiniLM-L6-v2, the one the SB3 wrappers use); a context
is identified when its nearest other context (cosine) is its own task's other context.
Accuracy over all 2 x tasks contexts, per context variant (ablations of the parts).

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

from coral_env.env.contexts import compose_context, example_block, facts_line, format_line, labeled_support
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

VARIANTS = {
    "format + facts": lambda d, s: "\n\n".join([format_line(s), facts_line(s)]),
    "examples only": lambda d, s: example_block(labeled_support(s)),
    "full context": lambda d, s: compose_context(d, s),
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
        "--describe", action="store_true", help="also write LLM descriptions (--context-model) for each half"
    )
    parser.add_argument("--context-model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--out", default="benchmarks/context_id.md")
    args = parser.parse_args(argv)
    from sentence_transformers import SentenceTransformer

    from coral_env.agents.encoder import resolve_encoder_path

    tasks = args.tasks.split(",") if args.tasks else default_tasks()
    views: dict[str, tuple[TaskSplits, TaskSplits]] = {}
    for name in tasks:
        views[name] = halves(load_task(name, args.data_dir, seed=0, sizes=preset_split_sizes(args.preset)))
    descriptions = {name: ("", "") for name in tasks}
    describe_seconds = None
    if args.describe:
        from coral_env.backend.models import load_model
        from coral_env.env.contexts import write_description

        model, tokenizer = load_model(args.context_model, "auto", "cpu")
        start = time.perf_counter()
        for name in tasks:
            a, b = views[name]
            descriptions[name] = tuple(write_description(model, tokenizer, labeled_support(s), s.kind) for s in (a, b))
        describe_seconds = time.perf_counter() - start
        VARIANTS["description only"] = lambda d, s: d
    encoder = SentenceTransformer(resolve_encoder_path(None), device="cpu")
    rows, examples = [], {}
    for variant, build in VARIANTS.items():
        for with_description in (False, True) if args.describe and variant == "full context" else (False,):
            texts, labels = [], []
            for name in tasks:
                for d, s in zip(
                    descriptions[name] if with_description or variant == "description only" else ("", ""), views[name]
                ):
                    texts.append(build(d, s))
                    labels.append(name)
            acc, misses = identification(texts, labels, encoder)
            label = variant + (" (with LLM description)" if with_description else "")
            family_misses = [m for m in misses if {m[0], m[1]} != set(SAME_SOURCE)]
            rows.append(
                {
                    "variant": label,
                    "accuracy": acc,
                    "n": len(texts),
                    "misses": misses,
                    "family_accuracy": 1.0 - len(family_misses) / len(texts),
                }
            )
            if variant == "full context":
                examples[label] = dict(zip(labels[::2], texts[::2]))
    write_report(Path(args.out), rows, examples, tasks, args, describe_seconds)
    summary = {r["variant"]: r["accuracy"] for r in rows}
    Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def write_report(out: Path, rows: list[dict], examples: dict, tasks: list[str], args, seconds) -> None:
    lines = [
        "# Task identification from the context",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}. "
        f"Command: `python {' '.join(sys.argv)}`.",
        "",
        f"{len(tasks)} tasks ({', '.join(tasks)}); two contexts per task from disjoint halves of the "
        f"{args.preset}-preset support split (even / odd positions: different verbatim examples, facts "
        "measured on different questions). Embedded with the packaged all-MiniLM-L6-v2; a context counts "
        "as identified when its nearest other context (cosine) belongs to the same task. Goal: >= 90%.",
        "",
        "| context variant | identified | ARC-E/ARC-C as one | contexts | misses (task -> nearest) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        misses = ", ".join(f"{a} -> {b}" for a, b in r["misses"])
        lines.append(
            f"| {r['variant']} | {r['accuracy']:.1%} | {r['family_accuracy']:.1%} | {r['n']} | {misses or '-'} |"
        )
    if seconds is not None:
        lines += ["", f"LLM descriptions ({args.context_model}): {seconds:.0f} s for {2 * len(tasks)}."]
    else:
        lines += [
            "",
            "Measured without the LLM description (`--describe` adds it; the 0.5B writer costs "
            "tens of seconds per context on this shared CPU). The description only adds text, "
            "so these rows are what the verbatim examples, format and facts achieve alone.",
        ]
    key = next(iter(examples))
    lines += ["", f"## Three contexts ({key}, first half)", ""]
    for name in [t for t in ("arc_easy", "gsm8k", "syn_parity") if t in examples[key]][:3]:
        lines += [f"**{name}**", "", "```text", examples[key][name], "```", ""]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
