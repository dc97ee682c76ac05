"""The held-out comparison of policies that ``coral demo`` and ``benchmarks/policies_bench.py``
share: evaluations cached in a run folder, the oracle, and the paired test results.

* ``evaluate_cached`` scores a policy on held-out tasks (``trainers.evaluation``) once and keeps
  its rows in a JSON file, so a rerun of the job reuses them.
* ``oracle_rules`` is the ceiling a policy can reach by choosing from a catalogue: every
  catalogue entry is run on each held-out task's *validation* split and the best one is kept
  (the test split is read only by the evaluation of the chosen strategies). Resumable per task.
* ``paired_test_results`` compares policies question by question on the test split
  (``trainers.paired``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable


def evaluate_cached(
    path: Path,
    make_env: Callable[..., Any],
    tasks: list[str],
    policy,
    episodes: int,
    name: str,
    seed: int,
    progress: bool = True,
    **env_kwargs,
) -> list[dict]:
    """``policy``'s evaluation rows on ``tasks`` (strict held out), computed once into ``path``."""
    from coral_env.backend.io import atomic_write_json, read_json

    from .evaluation import evaluate_policy_on_tasks

    if not path.exists():
        start = time.perf_counter()
        env = make_env(tasks, strict_heldout=True, **env_kwargs)
        rows = evaluate_policy_on_tasks(env, policy, tasks, episodes, name=name, seed=seed, progress=progress)
        atomic_write_json(path, {"rows": rows, "seconds": time.perf_counter() - start})
    return read_json(path, f"delete {path} and re-run the same command (that evaluation is redone)")["rows"]


def oracle_rules(
    folder: Path,
    make_env: Callable[..., Any],
    tasks: list[str],
    strategies: list,
    progress: bool = True,
    validation_size: int | None = None,
) -> dict[str, Any]:
    """``{task: Strategy}``: for each task, the entry of ``strategies`` with the highest validation
    metric (on its first ``validation_size`` questions; None: all) from the task's starting
    adapter, the first such entry on ties. Each task's scan is written to ``folder/<task>.json``
    (resumable); the test split is not read."""
    from tqdm.auto import tqdm

    from coral_env.backend.io import atomic_write_json, read_json
    from coral_env.strategies import parse_strategy

    folder.mkdir(parents=True, exist_ok=True)
    env, chosen = None, {}
    for task in tasks:
        path = folder / f"{task}.json"
        if not path.exists():
            sized = {} if validation_size is None else {"validation_size": validation_size}
            env = env or make_env(tasks, strict_heldout=True, eval_test=False, **sized)
            scan = []
            for strategy in tqdm(strategies, desc=f"oracle {task}", disable=not progress):
                env.reset(options={"task": task})
                _, reward, _, _, info = env.step(strategy.to_json())
                scan.append({"strategy": info.get("strategy"), "metric_after": info["metric_after"], "reward": reward})
            atomic_write_json(path, {"task": task, "metric_before": info["metric_before"], "scan": scan})
        scan = read_json(path, f"delete {path} and re-run (the task's scan is redone)")["scan"]
        best = max(scan, key=lambda cell: cell["metric_after"])  # max keeps the first of equal ones
        chosen[task] = parse_strategy(best["strategy"]).strategy
    return chosen


def paired_test_results(rows: list[dict], policies: list[str] | None = None) -> dict:
    """The test-split table of every policy with per-question rows, and the final ReST^EM
    iteration's (and PPO's) paired differences from random, zero-shot and the fixed rule."""
    from .paired import paired_policy_difference, policy_test_table

    found = list(dict.fromkeys(r["policy"] for r in rows if r.get("test_correct") is not None))
    policies = [p for p in (policies or found) if p in found]
    if not policies:
        return {"table": None, "differences": {}}
    restem = [p for p in policies if p.startswith("restem_iter")]
    reference = "random" if "random" in policies else None
    differences = {}
    for name, policy in (("restem", restem[-1] if restem else None), ("ppo", "ppo")):
        if policy not in policies:
            continue
        for other in ("random", "zero_shot", "fixed_rule"):
            if other in policies:
                d = paired_policy_difference(rows, policy, other)
                differences[f"{name}_vs_{other}"] = {"policy": policy, **d}
    return {"table": policy_test_table(rows, policies, reference), "differences": differences}


def merge_summary(path: Path, differences: dict) -> None:
    """Write ``differences`` into the JSON at ``path``, keeping its other keys."""
    from coral_env.backend.io import atomic_write_json

    current = json.loads(path.read_text()) if path.exists() else {}
    atomic_write_json(path, current | differences)


__all__ = ["evaluate_cached", "oracle_rules", "paired_test_results", "merge_summary"]
