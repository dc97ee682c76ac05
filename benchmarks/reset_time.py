#!/usr/bin/env python
"""Time `gym.make("Coral-v0", ...)` and two resets of one task (the first does the real work:
adapter, context, the starting adapter's validation evaluation; the second is served from caches).

Usage: CORAL_ARTIFACTS=artifacts /usr/bin/time -v python benchmarks/reset_time.py --task gsm8k
"""

import argparse
import json
import time

import gymnasium as gym

import coral_env  # noqa: F401  (registers Coral-v0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="gsm8k")
    p.add_argument("--preset", default="cpu")
    args = p.parse_args()
    start = time.perf_counter()
    env = gym.make("Coral-v0", task=args.task, preset=args.preset)
    made = time.perf_counter()
    _, info = env.reset(seed=0)
    first = time.perf_counter()
    env.reset(seed=1)
    second = time.perf_counter()
    timings = {"make_s": made - start, "first_reset_s": first - made, "second_reset_s": second - first}
    print(json.dumps({k: round(v, 1) for k, v in timings.items()} | {"heldout": info.get("heldout")}))


if __name__ == "__main__":
    main()
