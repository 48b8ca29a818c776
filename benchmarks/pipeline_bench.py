"""Synchronous vs asynchronous RL on this machine: the same tasks, model and number of updates.

Baseline: `sync`  — `algorithm.mode: sync`: roll out a step's groups, update, push, repeat.
Compared: `async` — `algorithm.mode: async` with η = --max-staleness: rollouts run in a
                    producer thread while the trainer updates (train/async_rollouts.py).

Both are real `agent-rl train` runs, one after the other in this process tree: SmolLM2-135M
(or --model) through the in-process hf engine, builtin tasks in hardened Docker sandboxes,
graded in fresh containers, --steps updates each. Reported per mode:

  wall_s             from the first rollout to the last update's weight push (model load and
                     the final checkpoint excluded: the sum of the steps' step_time_s)
  trainer_idle       the fraction of that time the trainer waited for rollouts (sync: the
                     rollout phase of every step; async: the time blocked in take())
  staleness_hist     the age in versions of every trained group (async: never above η)
  stale_dropped      groups dropped as older than η (their tasks are played again)
  deadline_cut       episodes ended by the episode deadline (--episode-deadline)

Placement (--placement):
  shared  the in-process hf engine: generation and the update share both cores, so the overlap
          async buys is mostly sandbox and grading time (process starts, pytest in containers).
  split   the layout of a GPU node, with cores for devices: `agent-rl serve` pinned to the engine
          cores (taskset, one torch thread per core), the trainer pinned to the others, weights
          pushed over HTTP (POST /v1/load_checkpoint) after every update. Sync leaves each side
          idle while the other works; async overlaps them. Containers run on any core.
Both modes of one run use the same placement; a fresh server (base weights) serves each mode.
Results: benchmarks/results/pipeline_bench-split-kl0-2core.json (split, --set algorithm.kl_beta=0:
1.53x), pipeline_bench-split-2core.json (split, smoke-cpu's KL: 1.35x), pipeline_bench-2core.json
(shared: 1.09x).

    python benchmarks/pipeline_bench.py [--steps 4] [--max-staleness 1] [--placement split]
        [--set algorithm.kl_beta=0] [--json PATH]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
TASKS = ["datekit-001", "lrukit-001", "semvertools-001", "linediff-001"]


def overrides(args: argparse.Namespace, mode: str, out: Path) -> list[str]:
    rows = [
        f"model.name={args.model}", f"output_dir={out}", f"max_steps={args.steps}", f"seed={args.seed}",
        f"tasks.ids={json.dumps(TASKS)}", "tasks.source=builtin",
        f"agent.max_turns={args.turns}", f"env.max_turns={args.turns}", f"agent.max_tokens_per_turn={args.tokens}",
        f"rollout.group_size={args.group_size}", f"rollout.tasks_per_step={args.tasks_per_step}",
        f"rollout.concurrency={args.concurrency}", "env.use_pool=true",
        f"algorithm.mini_batch_size={args.group_size * args.tasks_per_step}", "algorithm.micro_batch_size=2",
        f"algorithm.mode={mode}", f"algorithm.max_staleness={args.max_staleness}",
        "checkpoint.every=0", "checkpoint.save_optimizer=false", "logging.tensorboard=false", "logging.progress=false",
    ]
    if args.episode_deadline:
        rows.append(f"rollout.episode_deadline_s={args.episode_deadline}")
    return rows + list(args.set)  # last, so a --set wins over the defaults above


def pinned(cores: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """A command prefix and environment that keep a process (and its torch threads) on `cores`."""
    threads = str(len(cores.split(",")))
    return ["taskset", "-c", cores], {**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


@contextlib.contextmanager
def engine_server(args: argparse.Namespace, log: Path) -> Iterator[str]:
    """`agent-rl serve` on the engine cores, fresh (base weights); yields its URL."""
    prefix, env = pinned(args.engine_cores, {**os.environ, "PYTHONPATH": str(REPO)})
    cmd = [*prefix, sys.executable, "-m", "agent_rl.cli", "serve", "--model", args.model, "--port", "0",
           "--max-batch-size", str(args.concurrency)]
    with open(log, "w", encoding="utf-8") as fh:
        server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=fh, text=True)
        try:
            url = None
            for line in server.stdout:  # it prints its URL once the model is loaded
                fh.write(line)
                found = re.search(r"https?://[\w.:\[\]]+", line)
                if found:
                    url = found.group(0)
                    break
            if url is None:
                raise RuntimeError(f"agent-rl serve exited before serving; see {log}")
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def run_mode(args: argparse.Namespace, mode: str, out: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        prefix, env = [], {**os.environ, "PYTHONPATH": str(REPO)}
        extra = []
        if args.placement == "split":
            url = stack.enter_context(engine_server(args, out.with_suffix(".serve.log")))
            prefix, env = pinned(args.trainer_cores, env)
            extra = ["engine.kind=openai", f"engine.base_url={url}"]
        return _train(args, mode, out, prefix, env, extra)


def _train(args: argparse.Namespace, mode: str, out: Path, prefix: list[str], env: dict[str, str],
           extra: list[str]) -> dict[str, Any]:
    log = out.with_suffix(".log")
    cmd = [*prefix, sys.executable, "-m", "agent_rl.cli", "train", "--config", str(REPO / "configs" / "smoke-cpu.yaml"),
           *overrides(args, mode, out), *extra]
    with open(log, "w", encoding="utf-8") as fh:
        done = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed ({done.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    wall = sum(r["step_time_s"] for r in rows)
    if mode == "sync":
        idle = sum(r["rollout_s"] for r in rows)
        hist: dict[str, int] = {"0": sum(r["groups_kept"] for r in rows)}
    else:
        idle = sum(r["trainer_wait_s"] for r in rows)
        hist = {}
        for r in rows:
            for age, n in r["staleness_hist"].items():
                hist[age] = hist.get(age, 0) + n
    episodes = [json.loads(line) for p in sorted((out / "rollouts").glob("step-*.jsonl"))
                for line in p.read_text().splitlines() if line.strip()]
    return {
        "mode": mode, "updates": len(rows), "wall_s": round(wall, 2), "trainer_idle": round(idle / wall, 4) if wall else None,
        "staleness_hist": hist, "stale_dropped": sum(r.get("stale_dropped_groups", 0) for r in rows),
        "episodes": len(episodes), "deadline_cut": sum(e.get("finish_reason") == "deadline" for e in episodes),
        "reward_mean": round(sum(r["reward_mean"] for r in rows) / len(rows), 4),
        "step_time_s": [round(r["step_time_s"], 2) for r in rows],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=4, help="updates per mode")
    parser.add_argument("--max-staleness", type=int, default=1, help="η of the async run")
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--tasks-per-step", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=48, help="max tokens per turn")
    parser.add_argument("--episode-deadline", type=float, default=0.0, help="rollout.episode_deadline_s (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--placement", choices=("shared", "split"), default="shared",
                        help="shared: in-process engine on every core; split: a served engine and the trainer on their own cores")
    parser.add_argument("--engine-cores", default="0", help="cores of the served engine (split)")
    parser.add_argument("--trainer-cores", default="1", help="cores of the trainer (split)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train config override for both modes (repeatable), e.g. algorithm.kl_beta=0")
    parser.add_argument("--out", default="runs/pipeline-bench")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = [run_mode(args, mode, out / mode) for mode in ("sync", "async")]
    sync, asyn = results
    print(f"{'mode':<6} {'updates':>7} {'wall s':>8} {'idle':>6} {'stale drop':>10} {'cut':>4}  staleness")
    for r in results:
        print(f"{r['mode']:<6} {r['updates']:>7} {r['wall_s']:>8.1f} {r['trainer_idle']:>6.1%} {r['stale_dropped']:>10}"
              f" {r['deadline_cut']:>4}  {r['staleness_hist']}")
    speedup = sync["wall_s"] / asyn["wall_s"] if asyn["wall_s"] else float("nan")
    print(f"async vs sync: {speedup:.2f}x faster to {args.steps} updates (baseline: sync; placement {args.placement})")
    later = [sum(r["step_time_s"][1:]) for r in results]
    if all(later):
        print(f"after the first step (a cold start in both modes): {later[0] / later[1]:.2f}x")
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump({"settings": {k: v for k, v in vars(args).items() if k != "json_path"},
                       "results": results, "speedup": round(speedup, 3),
                       "speedup_after_first_step": round(later[0] / later[1], 3) if all(later) else None}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
