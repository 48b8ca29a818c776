"""Sandbox command latency, start-up and throughput, side by side in one run.

Exec latency of `true` in one running container (the methods take turns, so load from
other processes on a shared machine hits all of them alike):
  baseline  `docker exec` — the CLI, one subprocess per command (what scripts usually do);
            `sdk exec_run` — docker-py's exec_create + exec_start per command;
  ours      `fast path`  — DockerSandbox.exec over the attach socket to the in-container server;
            `fast path, back to back` — the same with no pause between commands.
Start-up: a cold `DockerSandbox(...)` (create, start, first reply) vs `SandboxPool.acquire()`
with a warm pool. Throughput: 32 sandboxes driven concurrently with `aexec`, fast path vs
the `fast_exec=False` (exec_run) fallback.

    python benchmarks/sandbox_bench.py [--n 200] [--concurrent 32] [--sections latency,...] [--json PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Any, Callable

from sandboxes.docker import DockerSandbox
from sandboxes.executor import run_blocking
from sandboxes.images import ensure_base_image
from sandboxes.pool import SandboxPool


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "mean_ms": statistics.fmean(ordered) * 1000,
            "n": len(ordered)}


def time_interleaved(n: int, actions: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
    """Round-robin over the methods, so a burst of load from other processes on a shared
    machine hits all of them alike instead of whichever happened to run then."""
    for action in actions.values():
        action()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(n):
        for name, action in actions.items():
            started = time.perf_counter()
            action()
            samples[name].append(time.perf_counter() - started)
    return samples


def exec_latency(client: Any, image: str, n: int) -> dict[str, dict[str, float]]:
    with DockerSandbox(image, client=client) as sandbox:
        cid = sandbox.container_id

        def cli() -> None:
            subprocess.run(["docker", "exec", "-u", "1000:1000", cid, "true"], check=True)

        def sdk() -> None:
            exec_id = client.api.exec_create(cid, ["true"], user="1000:1000")["Id"]
            client.api.exec_start(exec_id)

        samples = time_interleaved(n, {
            "docker exec (CLI)": cli,
            "sdk exec_run": sdk,
            "fast path": lambda: sandbox.exec("true"),
        })
        # Interleaved, the fast path idles while the others run; an agent loop or env_bench
        # sends commands back to back, which is what this row measures.
        samples.update(time_interleaved(n, {"fast path, back to back": lambda: sandbox.exec("true")}))
        return {name: percentiles(values) for name, values in samples.items()}


def startup(client: Any, image: str, n: int) -> dict[str, dict[str, float]]:
    cold = []
    for _ in range(n):
        started = time.perf_counter()
        sandbox = DockerSandbox(image, client=client)
        cold.append(time.perf_counter() - started)
        sandbox.close()
    warm = []
    with SandboxPool(image, size=4, client=client) as pool:
        for _ in range(n):
            pool.wait_warm(timeout=300)  # measure the warm case: wait for refills untimed
            started = time.perf_counter()
            sandbox = pool.acquire()
            warm.append(time.perf_counter() - started)
            sandbox.close()
    return {"cold DockerSandbox()": percentiles(cold), "pool acquire (warm)": percentiles(warm)}


async def throughput(client: Any, image: str, concurrent: int, per_sandbox: int) -> dict[str, dict[str, float]]:
    results = {}
    for label, config in (("exec_run fallback", {"fast_exec": False}), ("fast path", {})):
        config = {**config, "mem_limit": "256m", "cpus": 0.5}
        sandboxes = await asyncio.gather(
            *(run_blocking(lambda: DockerSandbox(image, config, client=client)) for _ in range(concurrent)))
        try:
            async def drive(sandbox: DockerSandbox) -> None:
                for _ in range(per_sandbox):
                    await sandbox.aexec("true")

            started = time.perf_counter()
            await asyncio.gather(*(drive(s) for s in sandboxes))
            elapsed = time.perf_counter() - started
        finally:
            await asyncio.gather(*(s.aclose() for s in sandboxes))
        total = concurrent * per_sandbox
        results[f"{concurrent} sandboxes, {label}"] = {
            "commands": total, "seconds": elapsed, "commands_per_s": total / elapsed}
    return results


def print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    if "exec_latency" in report:
        _latency_table(console, report)
    if "startup" in report:
        _startup_table(console, report)
    if "throughput" in report:
        _throughput_table(console, report)


def _latency_table(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    latency = Table(title="exec latency of `true` (ms)")
    for column in ("method", "p50", "p99", "mean", "n", "p50 speed-up vs CLI"):
        latency.add_column(column, justify="right" if column != "method" else "left")
    cli_p50 = report["exec_latency"]["docker exec (CLI)"]["p50_ms"]
    for name, row in report["exec_latency"].items():
        latency.add_row(name, f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}", f"{row['mean_ms']:.2f}",
                        str(row["n"]), f"{cli_p50 / row['p50_ms']:.1f}x")
    console.print(latency)


def _startup_table(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    start = Table(title="getting a sandbox (ms)")
    for column in ("method", "p50", "p99", "n"):
        start.add_column(column, justify="right" if column != "method" else "left")
    for name, row in report["startup"].items():
        start.add_row(name, f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}", str(row["n"]))
    console.print(start)


def _throughput_table(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    agg = Table(title="aggregate throughput (aexec of `true`)")
    for column in ("setting", "commands", "seconds", "commands/s"):
        agg.add_column(column, justify="right" if column != "setting" else "left")
    for name, row in report["throughput"].items():
        agg.add_row(name, str(row["commands"]), f"{row['seconds']:.2f}", f"{row['commands_per_s']:.0f}")
    console.print(agg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="commands per latency method")
    parser.add_argument("--starts", type=int, default=10, help="cold starts and pool acquisitions")
    parser.add_argument("--concurrent", type=int, default=32, help="sandboxes driven at once")
    parser.add_argument("--per-sandbox", type=int, default=20, help="commands per sandbox in the throughput run")
    parser.add_argument("--sections", default="latency,startup,throughput",
                        help="comma-separated subset of latency,startup,throughput")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    import docker

    client = docker.from_env(timeout=600)
    image = ensure_base_image(client, progress=lambda message: None)
    sections = set(args.sections.split(","))
    unknown = sections - {"latency", "startup", "throughput"}
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                    "engine": client.version().get("Version")},
        "image": image,
    }
    if "latency" in sections:
        report["exec_latency"] = exec_latency(client, image, args.n)
    if "startup" in sections:
        report["startup"] = startup(client, image, args.starts)
    if "throughput" in sections:
        report["throughput"] = asyncio.run(throughput(client, image, args.concurrent, args.per_sandbox))
    report["machine"]["load_avg_after"] = os.getloadavg()
    print_tables(report)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
