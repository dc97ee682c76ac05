#!/usr/bin/env python
"""Collect the headline performance figures into benchmarks/run_summary.json (for machines).

  demo_wall_s, demo_peak_rss_gb: from `/usr/bin/time -v` output of the README's first command
      (`--demo-time FILE`); kept from the existing file when not given, null if never measured;
  generation_speedup_vs_lm_eval: benchmarks/generation_summary.json (generation_bench.py);
  sampling_speedup_k20: benchmarks/policy_sampling.json (policy_sampling.py).

Usage: python benchmarks/run_summary.py [--demo-time time-v.txt]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_time_v(text: str) -> dict:
    """Wall seconds and peak RSS (GB) from GNU time's verbose report."""
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if not wall or not rss:
        raise SystemExit("not a `/usr/bin/time -v` report: no wall clock time or maximum resident set size line")
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return {"demo_wall_s": round(seconds, 1), "demo_peak_rss_gb": round(int(rss.group(1)) / 1024**2, 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-time", type=Path, help="`/usr/bin/time -v` output of the README's first command")
    p.add_argument("--out", type=Path, default=HERE / "run_summary.json")
    args = p.parse_args(argv)
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    demo = parse_time_v(args.demo_time.read_text()) if args.demo_time else {}
    generation = json.loads((HERE / "generation_summary.json").read_text())
    sampling = json.loads((HERE / "policy_sampling.json").read_text())
    summary = {
        "demo_wall_s": demo.get("demo_wall_s", old.get("demo_wall_s")),
        "demo_peak_rss_gb": demo.get("demo_peak_rss_gb", old.get("demo_peak_rss_gb")),
        "generation_speedup_vs_lm_eval": round(generation["speedup_wall"], 2),
        "sampling_speedup_k20": round(sampling["summary"]["20"]["speedup_median_of_paired_runs"], 2),
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
