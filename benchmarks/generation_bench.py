"""CPU generation throughput for SmolLM2-135M: batched vs sequential, in-process vs over HTTP.

Baseline: `sequential` — the same requests sent one after another to HFEngine.
Compared:  `batched`    — all requests concurrently, gathered into one batch by HFEngine;
           `staggered, static` / `staggered, continuous` — agent-like load: requests arrive
                           one every --stagger-ms, every other one short (4 tokens), decoded with
                           joining disabled (static batches, the engine's former behaviour) and
                           enabled (continuous batching); compare their wall time and mean latency;
           `openai+serve` — all requests concurrently through OpenAIEngine to a real
                           `agent-rl serve` subprocess on loopback (HTTP + JSON overhead).
Wall time and the CPU seconds of the decoding process (this one, or the server) are both
reported: on a shared machine wall time mostly measures the neighbours' load.
Every mode decodes the same prompts greedily for the same max_tokens (counting prompts, so
the model does not stop early); tokens/s counts the tokens actually generated.

    python benchmarks/generation_bench.py [--requests 8] [--max-tokens 32] [--json PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable

from agent_rl.engines.base import Generation, SamplingParams


def make_prompts(tokenizer: Any, n: int) -> list[list[int]]:
    # Varied lengths so left padding is exercised; counting keeps the model from stopping.
    return [tokenizer.encode(", ".join(str(k) for k in range(i, i + 6 + 3 * i)) + ",",
                             add_special_tokens=False) for i in range(n)]


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by this process (pid None) or another one (Linux /proc)."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def timed(
    run: Callable[[], Awaitable[list[Generation]]], worker_pid: int | None
) -> tuple[float, float, list[Generation]]:
    # CPU seconds of the process that decodes are reported beside wall time: on a shared,
    # oversubscribed machine wall time mostly measures the neighbours.
    cpu_before, started = process_cpu_s(worker_pid), time.perf_counter()
    generations = await run()
    return time.perf_counter() - started, process_cpu_s(worker_pid) - cpu_before, generations


def start_server(threads: int | None) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_rl.cli", "serve", "--port", "0", "--batch-wait-ms", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    for line in proc.stdout:
        if " at http://" in line:
            return proc, line.split(" at ", 1)[1].strip()
    raise RuntimeError("agent-rl serve exited before printing its URL")


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    from agent_rl.engines.hf import HFEngine
    from agent_rl.engines.openai_http import OpenAIEngine

    engine = HFEngine(args.model, max_batch_size=args.requests, batch_wait_ms=20)
    prompts = make_prompts(engine.tokenizer, args.requests)
    sampling = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    await engine.generate(prompts[0], SamplingParams(temperature=0, max_tokens=2))  # warm-up

    async def sequential() -> list[Generation]:
        return [await engine.generate(p, sampling) for p in prompts]

    async def batched() -> list[Generation]:
        return list(await asyncio.gather(*(engine.generate(p, sampling) for p in prompts)))

    async def staggered() -> list[Generation]:
        async def one(i: int, prompt: list[int]) -> Generation:
            await asyncio.sleep(i * args.stagger_ms / 1000)
            return await engine.generate(prompt, sampling if i % 2 == 0 else SamplingParams(temperature=0, max_tokens=4))
        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    joinable = engine._joinable

    def joining(flag: bool) -> Callable[[], Awaitable[list[Generation]]]:
        async def run() -> list[Generation]:
            engine._joinable = flag and joinable  # the switch the engine itself uses
            try:
                return await staggered()
            finally:
                engine._joinable = joinable
        return run

    modes: list[tuple[str, Callable[[], Awaitable[list[Generation]]], int | None]] = [
        ("sequential (baseline)", sequential, None), ("batched", batched, None),
        ("staggered, static", joining(False), None), ("staggered, continuous", joining(True), None)]
    server = remote = None
    if not args.skip_serve:
        server, url = start_server(args.threads)
        remote = OpenAIEngine(url, args.model)
        await remote.generate(prompts[0], SamplingParams(temperature=0, max_tokens=2))

        async def over_http() -> list[Generation]:
            return list(await asyncio.gather(*(remote.generate(p, sampling) for p in prompts)))

        modes.append(("openai+serve (concurrent)", over_http, server.pid))
    rows = []
    try:
        reference = reference_staggered = None
        for name, run, worker_pid in modes:
            wall, cpu, generations = await timed(run, worker_pid)
            tokens = sum(len(g.token_ids) for g in generations)
            ids = [g.token_ids for g in generations]
            reference = reference or ids
            if name.startswith("staggered"):  # a different workload: compared with each other
                reference_staggered = ids if name.endswith("static") else reference_staggered
            latency = sum(g.info.get("queue_s", 0) + g.info.get("decode_s", 0) for g in generations) / len(generations)
            rows.append({"mode": name, "requests": len(prompts), "tokens": tokens, "latency_mean_s": round(latency, 3),
                         "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 2),
                         "cpu_s": round(cpu, 2), "tokens_per_cpu_s": round(tokens / cpu, 2),
                         "same_tokens_as_baseline": ids == (reference_staggered if name.startswith("staggered") else reference)})
    finally:
        await engine.close()
        if remote is not None:
            await remote.close()
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup"] = round(row["tokens_per_s"] / base, 2)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'mode':<28}{'requests':>9}{'tokens':>8}{'wall s':>9}{'latency s':>10}{'tok/s':>9}{'speedup':>9}"
              f"{'cpu s':>9}{'tok/cpu-s':>11}  same ids")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['mode']:<28}{r['requests']:>9}{r['tokens']:>8}{r['wall_s']:>9.2f}{r['latency_mean_s']:>10.2f}"
              f"{r['tokens_per_s']:>9.1f}{r['speedup']:>8.2f}x{r['cpu_s']:>9.1f}"
              f"{r['tokens_per_cpu_s']:>11.2f}  {r['same_tokens_as_baseline']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--stagger-ms", type=float, default=150.0, help="gap between staggered arrivals")
    parser.add_argument("--skip-serve", action="store_true", help="leave out the HTTP path")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads here and in the server (1 avoids OpenMP spin-waiting "
                        "on an oversubscribed machine); default: torch's choice")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    load_at_start = os.getloadavg()
    rows = asyncio.run(bench(args))
    print_table(rows)
    if args.json:
        meta = {"model": args.model, "max_tokens": args.max_tokens, "torch_threads": torch.get_num_threads(),
                "server_threads": args.threads or "default",
                "cpu_count": os.cpu_count(), "load_avg_start": load_at_start,
                "load_avg_end": os.getloadavg(), "python": platform.python_version()}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
