"""Built-in suite loading: cold materialization vs the content-addressed cache.

Baseline: `cold` — every task materialized into an empty cache (git init, commit, diffs).
Compared:  `warm` — the same load again, served from the cache (no git at all).
           `refresh-task` — one task's local check (pytest on the buggy and gold states),
                            the unit of work of `python -m envs.suites.refresh`.

    python benchmarks/suite_load_bench.py [--suite NAME] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

from envs.suites import load_suite
from envs.suites.refresh import check_task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", help="one library (default: all)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="suite-bench-") as cache:
        started = time.perf_counter()
        tasks = load_suite(args.suite, cache_dir=cache)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        load_suite(args.suite, cache_dir=cache)
        warm = time.perf_counter() - started
        started = time.perf_counter()
        outcome = check_task(tasks[0])
        refresh_one = time.perf_counter() - started
    assert not outcome.problems, outcome.problems
    n = len(tasks)
    rows.append({"mode": "cold (baseline)", "tasks": n, "seconds": cold, "ms_per_task": 1000 * cold / n})
    rows.append({"mode": "warm", "tasks": n, "seconds": warm, "ms_per_task": 1000 * warm / n})
    rows.append({"mode": "refresh-task", "tasks": 1, "seconds": refresh_one, "ms_per_task": 1000 * refresh_one})

    print(f"{'mode':<16} {'tasks':>5} {'seconds':>9} {'ms/task':>9} {'vs cold':>8}")
    for row in rows:
        speedup = rows[0]["ms_per_task"] / row["ms_per_task"]
        print(f"{row['mode']:<16} {row['tasks']:>5} {row['seconds']:>9.3f} {row['ms_per_task']:>9.1f} {speedup:>7.1f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"platform": platform.platform(), "python": platform.python_version(), "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
