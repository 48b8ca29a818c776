"""What the environment layer costs on top of its sandbox, and what safe grading costs.

Side by side, on one builtin task, in one run:

* step:   `env.step("```bash\\ntrue\\n```")` (parse + exec + observation)  vs  baseline
          `sandbox.exec("true")` on the same container.
* reset:  a fresh hardened container per episode  vs  a warm `SandboxPool` (use_pool).
* grade:  `envs.grading.grade` (fresh container, patch filtering, trusted launcher,
          JUnit + plugin cross-check), cold-started and from the runner's warm grader pool,
          vs  baseline: plain `python3 -m pytest` on the same tests inside an already-running
          container that has the patch applied (what an unsafe grader would do). Target: the
          pooled grade costs <= 0.5 s over the baseline.
* runner: trainer-like steps through one `EpisodeRunner` (use_pool, scripted policy): container
          starts per step, and how many were on the critical path (target 0 after step 1).
* load:   `--episodes` (64) concurrent episodes of `--commands` bash commands each through the
          runner: failures (target 0) and aggregate commands/s.

    python benchmarks/env_bench.py [--task ID] [--steps 50] [--resets 5] [--grades 3]
        [--runner-steps 3] [--episodes 64] [--commands 5] [--json PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
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
    """Interleaved after a warm-up, as sandbox_bench does, next to sandbox_bench's own setup
    (a base-image sandbox): measured back to back instead, the first method ran on a
    container still settling after its start and looked 2-3x slower."""
    import docker

    from sandboxes.docker import DockerSandbox
    from sandboxes.images import ensure_base_image

    env.reset(seed=0)
    sandbox = env.sandbox
    with DockerSandbox(ensure_base_image(docker.from_env(), progress=lambda message: None)) as plain:
        actions = {
            "sandbox_bench's fast path: base-image sandbox.exec('true')": lambda: plain.exec("true", timeout=30),
            "baseline: sandbox.exec('true') in the env's sandbox": lambda: sandbox.exec("true", timeout=30),
            "env.step(bash true)": lambda: env.step("```bash\ntrue\n```"),
        }
        for action in actions.values():
            timed(action, 5)  # warm-up
        samples: dict[str, list[float]] = {name: [] for name in actions}
        for _ in range(n):
            for name, action in actions.items():
                samples[name] += timed(action, 1)
    stats = {name: percentiles(values) for name, values in samples.items()}
    baseline = stats["baseline: sandbox.exec('true') in the env's sandbox"]["p50_ms"]
    return [{"what": "step", "mode": name, **row, "ratio": row["p50_ms"] / baseline} for name, row in stats.items()]


def bench_resets(task: Any, n: int) -> list[dict[str, Any]]:
    from envs.swe_env import SWEEnv

    rows = []
    baseline_p50 = None
    for label, config in (("baseline: fresh container", {}), ("warm pool (use_pool)", {"use_pool": True, "pool_size": 2})):
        with SWEEnv(tasks=[task], config={**config, "max_turns": 10 * n}) as env:
            env.reset(options={"task": task})  # builds/starts the pool; not timed
            samples = []
            for _ in range(n):
                env._own_sandboxes.wait_warm(timeout=60)  # steady state: the background refill has caught up
                started = time.perf_counter()
                env.reset(options={"task": task})
                samples.append(time.perf_counter() - started)
        stats = percentiles(samples)
        baseline_p50 = baseline_p50 or stats["p50_ms"]
        rows.append({"what": "reset", "mode": label, **stats, "ratio": stats["p50_ms"] / baseline_p50})
    return rows


def bench_grading(task: Any, n: int) -> list[dict[str, Any]]:
    """The modes take turns each round, so load from other processes hits all alike. The
    "fresh container" row is bare pytest as the first run in a pristine pooled container:
    what a grade's test run pays for starting with cold caches, before any defence."""
    from envs.episode_sandboxes import EpisodeSandboxes
    from envs.grading import grade
    from envs.task_images import task_image
    from sandboxes.docker import DockerSandbox

    image = task_image(task)
    files = sorted({t.split("::")[0] for t in [*task.FAIL_TO_PASS, *task.PASS_TO_PASS]})
    pytest_cmd = "python3 -m pytest -q -p no:cacheprovider " + " ".join(files)

    def apply_gold_and_tests(box: Any) -> None:
        for name, patch in (("gold", task.patch), ("tests", task.test_patch)):
            box.write_file(f"/tmp/{name}.patch", patch)
            assert box.exec(f"git apply /tmp/{name}.patch", timeout=60).ok

    reports: list[Any] = []
    samples: dict[str, list[float]] = {}
    with DockerSandbox(image, {"workdir": task.workdir}) as box, \
            EpisodeSandboxes(use_pool=True, max_concurrency=2, background_close=True) as sandboxes:  # as the runner
        apply_gold_and_tests(box)
        box.exec(pytest_cmd, timeout=300)  # warm-up: the running container's caches are warm
        sandboxes.prepare([(image, task, 2)])

        def fresh() -> None:
            with sandboxes.grader(image, task) as pristine:
                apply_gold_and_tests(pristine)
                samples.setdefault("fresh", []).append(timed(lambda: pristine.exec(pytest_cmd, timeout=300), 1)[0])

        modes = {
            "baseline": lambda: box.exec(pytest_cmd, timeout=300),
            "cold": lambda: reports.append(grade(task, task.patch, image=image)),
            "pooled": lambda: reports.append(grade(task, task.patch, image=image, sandbox_factory=sandboxes.grader)),
        }
        for _ in range(n):
            for name, action in modes.items():
                sandboxes.wait_warm(timeout=120)  # steady state: the refill ran while the episode played
                samples.setdefault(name, []).extend(timed(action, 1))
            fresh()
    assert all(r.resolved for r in reports), "the gold patch must resolve"
    base = percentiles(samples["baseline"])
    rows = [{"what": "grade", "mode": "baseline: pytest in a running container", **base}]
    labels = {"fresh": "bare pytest, first run in a fresh container", "cold": "grade() cold container + defences",
              "pooled": "grade() warm grader pool + defences"}
    for name, label in labels.items():
        stats = percentiles(samples[name])
        rows.append({"what": "grade", "mode": label, **stats, "ratio": stats["p50_ms"] / base["p50_ms"],
                     "overhead_s": (stats["p50_ms"] - base["p50_ms"]) / 1000})
    pooled = reports[1::2]
    parts = {key: statistics.median(r.timings.get(key, 0.0) for r in pooled) for key in ("apply_s", "test_s", "total_s")}
    parts["rest_s"] = parts["total_s"] - parts["apply_s"] - parts["test_s"]
    rows.append({"what": "grade", "mode": "  pooled, medians: " + ", ".join(f"{k} {v:.2f}s" for k, v in parts.items()),
                 "p50_ms": parts["total_s"] * 1000, "p99_ms": parts["total_s"] * 1000, "n": len(pooled), **parts})
    return rows


class _ScriptedPolicy:
    """A stand-in engine that always runs one bash command, so the env is what's measured; the
    env's max_turns ends each episode (truncated, then graded) after `--commands` turns."""

    name = "scripted"
    COMMAND = "```bash\nls -la && git log --oneline | head -n 3\n```"

    def __init__(self, tokenizer: Any) -> None:
        self.ids = tokenizer.encode(self.COMMAND, add_special_tokens=False) + [tokenizer.eos_token_id]

    async def generate(self, prompt_ids: list[int], sampling: Any) -> Any:
        from agent_rl.engines.base import Generation

        return Generation(list(self.ids), [-0.1] * len(self.ids), "stop", text=self.COMMAND)

    async def close(self) -> None:
        pass


def _runner_collect(runner: Any, tasks: list[Any], tokenizer: Any, group_size: int, commands: int) -> list[Any]:
    agent = {"max_turns": commands + 1, "max_tokens_per_turn": 64, "max_total_tokens": 32768, "verify_rerender": False}
    return asyncio.run(runner.collect(tasks, _ScriptedPolicy(tokenizer), tokenizer, group_size=group_size,
                                      agent_config=agent, progress=False))


def bench_runner_steps(task: Any, tokenizer: Any, steps: int, concurrency: int = 4) -> list[dict[str, Any]]:
    """Trainer-like steps through one runner: starts per step and those on the critical path."""
    from agent_rl.rollout.runner import EpisodeRunner

    rows = []
    with EpisodeRunner({"use_pool": True, "max_turns": 2}, concurrency=concurrency) as runner:
        for step in range(1, steps + 1):
            before = runner.stats()
            started = time.perf_counter()
            trajs = _runner_collect(runner, [task], tokenizer, concurrency, 2)
            wall = time.perf_counter() - started
            after = runner.stats()
            rows.append({"what": "runner", "mode": f"step {step}: {concurrency} episodes, use_pool", "n": len(trajs),
                         "p50_ms": wall * 1000, "p99_ms": wall * 1000,
                         "container_starts": after["started"] - before.get("started", 0),
                         "critical_path_starts": after["cold_starts"] - before.get("cold_starts", 0),
                         "errors": sum(t.error is not None for t in trajs)})
            runner.wait_warm(timeout=300)  # stands in for the update phase, during which pools refill
    return rows


def bench_load(task: Any, tokenizer: Any, episodes: int, commands: int) -> list[dict[str, Any]]:
    """`episodes` concurrent episodes through one runner: failures and aggregate commands/s."""
    from agent_rl.rollout.runner import EpisodeRunner

    env = {"use_pool": True, "max_turns": commands, "sandbox": {"mem_limit": "256m", "cpus": 0.5},
           "grading": {"sandbox": {"mem_limit": "512m"}}}
    with EpisodeRunner(env, concurrency=episodes) as runner:
        started = time.perf_counter()
        trajs = _runner_collect(runner, [task], tokenizer, episodes, commands)
        wall = time.perf_counter() - started
        stats = runner.stats()
    failures = [t.error or (t.grade or {}).get("error") for t in trajs if t.error or (t.grade or {}).get("error")]
    ran = sum(t.num_turns for t in trajs if t.error is None)
    return [{"what": "load", "mode": f"{episodes} concurrent episodes x {commands} commands", "n": len(trajs),
             "p50_ms": wall * 1000, "p99_ms": wall * 1000, "failures": len(failures),
             "failure_examples": failures[:3], "commands_per_s": ran / wall, "container_starts": stats["started"]}]


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="agent-rl environment benchmark")
    for column in ("what", "mode", "n", "p50 ms", "p99 ms", "× baseline", "notes"):
        table.add_column(column, justify="left" if column in ("what", "mode", "notes") else "right")
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
        notes = []
        if "overhead_s" in row:
            notes.append(f"+{row['overhead_s']:.2f} s over baseline")
        if "container_starts" in row:
            notes.append(f"starts {row['container_starts']}")
        if "critical_path_starts" in row:
            notes.append(f"on critical path {row['critical_path_starts']}")
        if "failures" in row:
            notes.append(f"failures {row['failures']}, {row['commands_per_s']:.1f} commands/s")
        table.add_row(row["what"], row["mode"], str(row["n"]), f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}", ratio,
                      "; ".join(notes))
    Console().print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", help="builtin task id (default: the first builtin:easy task)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--resets", type=int, default=5)
    parser.add_argument("--grades", type=int, default=3)
    parser.add_argument("--runner-steps", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=64, help="concurrent episodes of the load test (0: skip)")
    parser.add_argument("--commands", type=int, default=5, help="bash commands per load-test episode")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: step,reset,grade,runner,load")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from envs.swe_env import SWEEnv
    from envs.tasks import TaskStore, load_tasks

    store = TaskStore(load_tasks("builtin"))
    task = store.get(args.task) if args.task else load_tasks("builtin:easy")[0]
    skip = set(filter(None, args.skip.split(",")))
    rows: list[dict[str, Any]] = []
    if "step" not in skip:
        with SWEEnv(tasks=[task], config={"max_turns": 2 * args.steps + 20}) as env:
            rows += bench_steps(env, args.steps)
    if "reset" not in skip:
        rows += bench_resets(task, args.resets)
    if "grade" not in skip:
        rows += bench_grading(task, args.grades)
    if not {"runner", "load"} <= skip:
        from agent_rl.engines.models import load_tokenizer

        tokenizer = load_tokenizer("smollm2-135m")
        if "runner" not in skip:
            rows += bench_runner_steps(task, tokenizer, args.runner_steps)
        if "load" not in skip and args.episodes:
            rows += bench_load(task, tokenizer, args.episodes, args.commands)
    print_table(rows)
    if args.json:
        meta = {"task": task.instance_id, "host": platform.node(), "python": platform.python_version(),
                "cpus": os.cpu_count(), "note": "shared machine: compare rows of one run (ratios), not runs"}
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
