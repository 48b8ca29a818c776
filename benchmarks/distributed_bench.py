"""Scale-out on one machine: an update step on 1 process vs 2 FSDP2 ranks, rollouts on 1 vs 2 Docker hosts.

Part 1, the update: one DAPO update step as 1 process vs 2 FSDP2 ranks (torchrun, gloo) on the same batch.

Baseline: `1 process` — `update_step` on SmolLM2-135M (fp32) with all the machine's threads.
Compared: `2 ranks`   — `torchrun --nproc-per-node 2`, each rank one thread and half of every
                        mini-batch, the policy sharded by FSDP2 (train/distributed).

Both take the same seeded batch (--rows rows of about --tokens tokens, uneven lengths) from
the same weights with SGD at lr 1e-3, and report the loss, the grad norm, the change of two
parameter tensors and the wall time of the step (model load and process start excluded).
The point on a 2-core machine is equality (the loss and gradients must match); the time
ratio shows what sharding costs where there is no second device to gain from.

Part 2, the rollouts: the scripted expert (`agent-rl demos --style direct`, no model) plays
--episodes floor tasks, --concurrency at a time, with `env.docker_hosts` set to the local
engine alone (baseline) and to the local engine plus a second dockerd on this machine
(sandboxes/local_dockerd.py; placement by free capacity, images copied on first use). Each
is run once to warm (image copies) and once timed. Both engines share the same 2 cores, so
this measures the multi-host layer's overhead and correctness (every episode resolves), not
added capacity; on separate machines the second host brings its own CPUs.

    python benchmarks/distributed_bench.py [--rows 8] [--tokens 256] [--episodes 8] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WATCHED = ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight")


def worker(out: str, rows: int, tokens: int) -> None:
    """One update step in this process (or this rank); rank 0 writes the figures to `out`."""
    import torch

    from agent_rl.algo.batch import ShapingSettings, build_train_batch
    from agent_rl.engines.models import load_model
    from agent_rl.rollout.trajectory import Trajectory
    from agent_rl.train.config import load_train_config
    from agent_rl.train.distributed.fsdp import ShardSettings, full_state_dict, shard
    from agent_rl.train.distributed.ranks import Ranks
    from agent_rl.train.update import UpdateSettings, update_step

    ranks = Ranks.from_env("cpu")
    config = load_train_config(REPO / "configs" / "smoke-cpu.yaml", [
        "algorithm.kl_beta=0", f"rollout.tasks_per_step={rows // 2}", "rollout.group_size=2",
        f"algorithm.mini_batch_size={rows}", "algorithm.micro_batch_size=2", "optim.grad_clip=1e9"])
    model, _ = load_model("smollm2-135m", device="cpu", dtype=torch.float32)
    before = {k: model.state_dict()[k].clone() for k in WATCHED}
    gen = torch.Generator().manual_seed(0)
    groups = []
    for g in range(rows // 2):
        group = []
        for i in range(2):
            n = int(tokens * (0.5 + (g * 2 + i) / rows))  # 0.5× .. 1.5× --tokens
            group.append(Trajectory(task_id=f"t{g}", prompt_ids=torch.randint(10, 40000, (32,), generator=gen).tolist(),
                                    response_ids=torch.randint(10, 40000, (n,), generator=gen).tolist(),
                                    loss_mask=[1] * n, behaviour_logprobs=[-5.0] * n, reward=float(i), group_index=i))
        groups.append(group)
    batch = build_train_batch(groups, ShapingSettings.from_algorithm(config.algorithm), 0)
    model = shard(model, ranks, ShardSettings(), "cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    settings = UpdateSettings.from_config(config, temperature=1.0, device="cpu", ranks=ranks)
    ranks.barrier()
    started = time.perf_counter()
    metrics = update_step(model, optimizer, batch, settings, seed=7)
    ranks.barrier()
    seconds = time.perf_counter() - started
    after = full_state_dict(model)
    if ranks.is_main:
        torch.save({"metrics": metrics, "seconds": seconds, "tokens": int(batch.attention_mask.sum()),
                    "delta": {k: after[k] - before[k] for k in WATCHED}}, out)
    ranks.close()


def rollouts_on_hosts(episodes: int, concurrency: int, out: Path) -> list[dict[str, Any]]:
    """Wall time and resolved episodes of the scripted expert on 1 vs 2 Docker hosts."""
    import asyncio

    from agent_rl.demos.collect import collect_demos
    from agent_rl.engines.models import load_tokenizer
    from envs.tasks import load_tasks
    from sandboxes.local_dockerd import ExtraDockerd

    tasks = sorted(load_tasks("builtin:floor:train"), key=lambda t: t.instance_id)[:episodes]
    tokenizer = load_tokenizer("smollm2-135m")
    main = {"url": "unix:///var/run/docker.sock", "name": "main"}
    extra = ExtraDockerd.for_main_engine()
    extra.start()
    rows = []
    try:
        for label, hosts in (("1 host", [main]), ("2 hosts", [main, {"url": extra.url, "name": "second"}])):
            env = {"docker_hosts": hosts}
            for phase in ("warm", "timed"):
                report = asyncio.run(collect_demos(tasks, tokenizer, out / label.replace(" ", "-") / phase,
                                                   concurrency=concurrency, env_config=env, style="direct"))
            rows.append({"mode": label, "episodes": report.tasks, "resolved": report.resolved, "wall_s": report.wall_s,
                         "episodes_per_min": round(60 * report.tasks / max(report.wall_s, 1e-9), 1)})
    finally:
        extra.shutdown()
    return rows


def launch(ranks: int, out: Path, rows: int, tokens: int) -> dict[str, Any]:
    import torch

    threads = os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(max(1, threads // ranks))}
    head = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                 "--nproc-per-node", str(ranks)]
    cmd = [*head, __file__, "--worker", str(out), "--rows", str(rows), "--tokens", str(tokens)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{ranks} rank(s) failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return torch.load(out, weights_only=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8, help="trajectories in the batch (even)")
    parser.add_argument("--tokens", type=int, default=256, help="mean response tokens per row")
    parser.add_argument("--episodes", type=int, default=8, help="rollout episodes per host setting (0: skip part 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="episodes at once")
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="runs/distributed-bench")
    parser.add_argument("--json", dest="json_path", help="write the results here")
    args = parser.parse_args(argv)
    if args.rows < 2 or args.rows % 2:
        parser.error("--rows must be an even number >= 2")
    if args.worker:
        worker(args.worker, args.rows, args.tokens)
        return 0
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    one = launch(1, out / "one.pt", args.rows, args.tokens)
    two = launch(2, out / "two.pt", args.rows, args.tokens)
    rows = []
    for label, run in (("1 process", one), ("2 ranks", two)):
        rows.append({"mode": label, "seconds": round(run["seconds"], 2), "loss": run["metrics"]["loss"],
                     "grad_norm": run["metrics"]["grad_norm"], "tokens": run["tokens"]})
    max_delta_diff = max(float((one["delta"][k] - two["delta"][k]).abs().max()) for k in WATCHED)
    result = {
        "settings": {"rows": args.rows, "tokens": args.tokens, "cores": os.cpu_count(), "torch": torch.__version__},
        "modes": rows,
        "loss_abs_diff": abs(one["metrics"]["loss"] - two["metrics"]["loss"]),
        "grad_norm_rel_diff": abs(one["metrics"]["grad_norm"] - two["metrics"]["grad_norm"]) / one["metrics"]["grad_norm"],
        "max_param_change_diff": max_delta_diff,
        "time_ratio_2_over_1": round(two["seconds"] / one["seconds"], 3),
    }
    print(f"{'mode':<10} {'step s':>8} {'loss':>12} {'grad norm':>10} {'tokens':>7}")
    for row in rows:
        print(f"{row['mode']:<10} {row['seconds']:>8.2f} {row['loss']:>12.8f} {row['grad_norm']:>10.6f} {row['tokens']:>7}")
    print(f"|Δloss| {result['loss_abs_diff']:.2e}  grad-norm rel diff {result['grad_norm_rel_diff']:.2e}  "
          f"max |Δ param change| {max_delta_diff:.2e}  time 2 ranks / 1 process = {result['time_ratio_2_over_1']:.2f}x")
    if args.episodes:
        result["rollouts"] = rollouts_on_hosts(args.episodes, args.concurrency, out)
        print(f"\n{'hosts':<8} {'episodes':>8} {'resolved':>8} {'wall s':>8} {'ep/min':>7}")
        for row in result["rollouts"]:
            print(f"{row['mode']:<8} {row['episodes']:>8} {row['resolved']:>8} {row['wall_s']:>8.1f} {row['episodes_per_min']:>7.1f}")
        one_host, two_hosts = result["rollouts"]
        result["rollout_time_ratio_2_over_1"] = round(two_hosts["wall_s"] / max(one_host["wall_s"], 1e-9), 3)
        print(f"wall 2 hosts / 1 host = {result['rollout_time_ratio_2_over_1']:.2f}x")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
