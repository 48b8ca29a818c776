"""What the environment layer costs on top of its sandbox, and what safe grading costs.

Side by side, on one builtin task, in one run:

* step:   `env.step("```bash\\ntrue\\n```")` (parse + exec + observation)  vs  baseline
          `sandbox.exec("true")` on the same container.
* reset:  a fresh hardened container per episode  vs  a warm `SandboxPool` (use_pool).
* grade:  `envs.grading.grade` (fresh container, patch filtering, trusted launcher,
          JUnit + plugin cross-check)  vs  baseline: plain `python3 -m pytest` on the same
          tests inside an already-running container that has the patch applied (what an
          unsafe grader would do).

    python benchmarks/env_bench.py [--task ID] [--steps 50] [--resets 5] [--grades 3] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any, Callable


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000, "n": len(ordered)}


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def bench_steps(env: Any, n: int) -> list[dict[str, Any]]:
    env.reset(seed=0)
    sandbox = env.sandbox
    baseline = percentiles(timed(lambda: sandbox.exec("true", timeout=30), n))
    stepped = percentiles(timed(lambda: env.step("```bash\ntrue\n```"), n))
    return [
        {"what": "step", "mode": "baseline: sandbox.exec('true')", **baseline},
        {"what": "step", "mode": "env.step(bash true)", **stepped, "ratio": stepped["p50_ms"] / baseline["p50_ms"]},
    ]


def bench_resets(task: Any, n: int) -> list[dict[str, Any]]:
    from envs.swe_env import SWEEnv

    rows = []
    baseline_p50 = None
    for label, config in (("baseline: fresh container", {}), ("warm pool (use_pool)", {"use_pool": True, "pool_size": 2})):
        with SWEEnv(tasks=[task], config={**config, "max_turns": 10 * n}) as env:
            env.reset(options={"task": task})  # builds/starts the pool; not timed
            samples = []
            for _ in range(n):
                for pool in env._pools.values():
                    pool.wait_warm(1, timeout=60)  # steady state: the background refill has caught up
                started = time.perf_counter()
                env.reset(options={"task": task})
                samples.append(time.perf_counter() - started)
        stats = percentiles(samples)
        baseline_p50 = baseline_p50 or stats["p50_ms"]
        rows.append({"what": "reset", "mode": label, **stats, "ratio": stats["p50_ms"] / baseline_p50})
    return rows


def bench_grading(task: Any, n: int) -> list[dict[str, Any]]:
    from envs.grading import grade
    from envs.task_images import task_image
    from sandboxes.docker import DockerSandbox

    image = task_image(task)
    files = sorted({t.split("::")[0] for t in [*task.FAIL_TO_PASS, *task.PASS_TO_PASS]})
    with DockerSandbox(image, {"workdir": task.workdir}) as box:
        for name, patch in (("gold", task.patch), ("tests", task.test_patch)):
            box.write_file(f"/tmp/{name}.patch", patch)
            assert box.exec(f"git apply /tmp/{name}.patch", timeout=60).ok
        naive = percentiles(timed(lambda: box.exec("python3 -m pytest -q -p no:cacheprovider " + " ".join(files), timeout=300), n))
    reports = []
    safe = percentiles(timed(lambda: reports.append(grade(task, task.patch, image=image)), n))
    assert all(r.resolved for r in reports), "the gold patch must resolve"
    return [
        {"what": "grade", "mode": "baseline: pytest in a running container", **naive},
        {"what": "grade", "mode": "grade() fresh container + defences", **safe, "ratio": safe["p50_ms"] / naive["p50_ms"]},
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="agent-rl environment benchmark")
    for column in ("what", "mode", "n", "p50 ms", "p99 ms", "× baseline"):
        table.add_column(column, justify="left" if column in ("what", "mode") else "right")
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else "1.00"
        table.add_row(row["what"], row["mode"], str(row["n"]), f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}", ratio)
    Console().print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", help="builtin task id (default: the first builtin:easy task)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--resets", type=int, default=5)
    parser.add_argument("--grades", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from envs.swe_env import SWEEnv
    from envs.tasks import TaskStore, load_tasks

    store = TaskStore(load_tasks("builtin"))
    task = store.get(args.task) if args.task else load_tasks("builtin:easy")[0]
    with SWEEnv(tasks=[task], config={"max_turns": args.steps + 5}) as env:
        rows = bench_steps(env, args.steps)
    rows += bench_resets(task, args.resets)
    rows += bench_grading(task, args.grades)
    print_table(rows)
    if args.json:
        meta = {"task": task.instance_id, "host": platform.node(), "python": platform.python_version()}
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
