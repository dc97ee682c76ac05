"""Wall time of one-step Coral-v0 episodes: 2 Ray actors x 1 torch thread (``EpisodePool``, what
``--workers 2`` runs) against 1 process x 2 torch threads (what ``--workers 1`` runs), on the
same episodes with the same seed; the rewards must be equal.

The work is ``--per-task`` catalogue strategies (families interleaved, so a task's episodes mix
costs) on each of ``--tasks``: distinct (task, strategy) pairs, so neither side's memo answers any.
Each run is a fresh process (model loads and baselines included); runs alternate between the
modes, and the medians of ``--runs`` are reported. Writes ``<out>.json`` and ``<out>.md``.

    HF_HUB_OFFLINE=1 python benchmarks/ray_bench.py --preset cpu --artifacts DIR \\
        --tasks syn_add,syn_compare,syn_sequence --per-task 4 --runs 3

One mode alone (the script runs each so): ``--mode single`` or ``--mode ray`` prints its JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("single", "ray")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"])
    p.add_argument("--artifacts", default=None, help="artifacts root (coral setup --artifacts)")
    p.add_argument("--tasks", default="syn_add,syn_compare,syn_sequence", help="comma-separated tasks")
    p.add_argument("--per-task", type=int, default=4, help="catalogue strategies scored per task")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (1 torch thread each)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the single process")
    p.add_argument("--runs", type=int, default=3, help="runs per mode, interleaved")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=MODES, default=None, help="run one mode in this process, print its JSON")
    p.add_argument("--out", default=str(HERE / "ray"), help="output prefix (.json and .md)")
    args = p.parse_args(argv)
    if args.per_task < 1 or args.runs < 1 or args.workers < 1 or args.threads < 1:
        p.error("--per-task, --runs, --workers and --threads must be >= 1")
    return args


def episodes(tasks: list[str], per_task: int) -> list[tuple[str, str]]:
    """(task, strategy JSON) pairs: the catalogue (TTS up to 4 batches) with families
    interleaved, the first ``per_task`` for each task."""
    from itertools import chain, zip_longest

    from coral_env.strategies import catalogue

    by_family: dict[str, list[str]] = {}
    for strategy in catalogue(4):
        by_family.setdefault(strategy.family, []).append(strategy.canonical_json())
    interleaved = [s for s in chain(*zip_longest(*by_family.values())) if s is not None]
    if per_task > len(interleaved):
        raise ValueError(f"--per-task {per_task} > the {len(interleaved)} catalogue strategies")
    return [(task, s) for task in tasks for s in interleaved[:per_task]]


def run_mode(args: argparse.Namespace) -> dict:
    """One mode, timed in this process: ready (runtimes loaded, every task reset on every
    runtime) and score (the episodes)."""
    import torch

    tasks = args.tasks.split(",")
    items = episodes(tasks, args.per_task)
    env_kwargs = dict(preset=args.preset, artifacts=args.artifacts, seed=args.seed)
    started = time.perf_counter()
    if args.mode == "single":
        import gymnasium as gym

        import coral_env  # noqa: F401  (registers Coral-v0)
        from coral_env.env.reward import reward_of

        torch.set_num_threads(args.threads)
        env = gym.make("Coral-v0", task=tasks, **env_kwargs)
        for task in tasks:
            env.reset(options={"task": task})
        ready = time.perf_counter()
        scored = [reward_of(action, env, task) for task, action in items]
    else:
        import ray

        from coral_env.env.ray_pool import EpisodePool
        from coral_env.tasks import registered_task_files

        pool = EpisodePool(env_kwargs, workers=args.workers, threads=1)
        # warm every actor alike: its runtime loads and each task's baseline is computed
        ray.get([a.reset.remote(t, registered_task_files(), {}, None) for a in pool.actors for t in tasks])
        ready = time.perf_counter()
        scored = pool.score(items, replies=False)
    done = time.perf_counter()
    return {
        "mode": args.mode,
        "ready_s": ready - started,
        "score_s": done - ready,
        "total_s": done - started,
        "episodes": [
            {"task": t, "action": a, "reward": float(r), "metric_after": info.get("metric_after")}
            for (t, a), (r, info) in zip(items, scored)
        ],
    }


def run_all(args: argparse.Namespace) -> dict:
    """``--runs`` fresh processes per mode, alternating; rewards compared episode by episode."""
    runs: list[dict] = []
    base = [sys.executable, str(Path(__file__).resolve()), *_passthrough(args)]
    loads = {"start": os.getloadavg()}
    for index in range(args.runs):
        for mode in MODES if index % 2 == 0 else MODES[::-1]:
            out = subprocess.run([*base, "--mode", mode], check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]) | {"run": index, "load_before": os.getloadavg()[0]})
    loads["end"] = os.getloadavg()
    reference = runs[0]["episodes"]
    equal = all(r["episodes"] == reference for r in runs)
    summary = {
        mode: {
            key: statistics.median(r[key] for r in runs if r["mode"] == mode)
            for key in ("ready_s", "score_s", "total_s")
        }
        for mode in MODES
    }
    return {"args": vars(args), "runs": runs, "summary": summary, "equal_rewards": equal, "loadavg": loads}


def _passthrough(args: argparse.Namespace) -> list[str]:
    flags = ["--preset", args.preset, "--tasks", args.tasks, "--per-task", str(args.per_task)]
    flags += ["--workers", str(args.workers), "--threads", str(args.threads), "--seed", str(args.seed)]
    return flags + (["--artifacts", args.artifacts] if args.artifacts else [])


def markdown(result: dict, command: str) -> str:
    import torch

    args, summary = result["args"], result["summary"]
    single, ray_ = summary["single"], summary["ray"]
    n = len(result["runs"][0]["episodes"])
    rewards = [e["reward"] for e in result["runs"][0]["episodes"]]
    lines = [
        "# Ray rollouts: 2 actors x 1 thread against 1 process x 2 threads",
        "",
        f"Generated by `benchmarks/ray_bench.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); command:",
        "",
        "```",
        command,
        "```",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"load average (1/5/15 min) {_load(result['loadavg']['start'])} at the start, "
        f"{_load(result['loadavg']['end'])} at the end.",
        f"- Work: {n} one-step episodes, {args['per_task']} catalogue strategies on each of "
        f"{args['tasks'].replace(',', ', ')} (preset `{args['preset']}`, seed {args['seed']}); all pairs distinct, "
        "so no memo hit on either side.",
        f"- `single`: one process, `gym.make('Coral-v0')`, torch {args['threads']} threads, episodes scored in "
        f"turn with `reward_of`. `ray`: `EpisodePool` with {args['workers']} local actors, 1 torch thread each "
        "(what `--workers 2` runs).",
        "- Each run is a fresh process; runs alternate between the modes. *ready*: the runtime(s) loaded and "
        "every task reset on every runtime (each actor computes each task's baseline itself); *score*: the "
        "episodes; *total*: both (Ray start-up included).",
        "- Rewards and validation metrics after the strategy equal in every run, episode by episode: "
        f"**{'yes' if result['equal_rewards'] else 'NO'}** ({sum(r > 0 for r in rewards)} of {n} rewarded).",
        "",
        f"## Medians of {args['runs']} runs per mode (s)" if args["runs"] > 1 else "## One run per mode (s)",
        "",
        "| mode | ready | score | total |",
        "|---|---:|---:|---:|",
        f"| 1 process x {args['threads']} threads | {single['ready_s']:.1f} | {single['score_s']:.1f} | "
        f"{single['total_s']:.1f} |",
        f"| {args['workers']} Ray actors x 1 thread | {ray_['ready_s']:.1f} | {ray_['score_s']:.1f} | "
        f"{ray_['total_s']:.1f} |",
        f"| speedup (single / ray) | {single['ready_s'] / ray_['ready_s']:.2f}x | "
        f"{single['score_s'] / ray_['score_s']:.2f}x | {single['total_s'] / ray_['total_s']:.2f}x |",
        "",
        "## Every run",
        "",
        "| run | mode | 1-min load before | ready | score | total |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['run']} | {r['mode']} | {r['load_before']:.2f} | {r['ready_s']:.1f} | {r['score_s']:.1f} | "
            f"{r['total_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _load(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args)))
        return 0
    result = run_all(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    command = "HF_HUB_OFFLINE=1 python benchmarks/ray_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out.with_suffix(".md").write_text(markdown(result, command))
    print(out.with_suffix(".md").read_text())
    return 0 if result["equal_rewards"] else 1


if __name__ == "__main__":
    sys.exit(main())
