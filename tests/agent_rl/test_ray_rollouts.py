"""Rollouts on a real two-node Ray cluster: a training step whose episodes run on both nodes,
and a node killed mid-step whose in-flight episodes are replayed on the other one.

The cluster is what a user starts: `ray start --head` and `ray start --address=...` as
separate processes (two nodes on one machine, each with its own raylet). The trainer joins
it, places one rollout worker per node and serves its own in-process engine (a tiny random
Llama with SmolLM2's tokenizer) to them over HTTP; every episode runs in real Docker
sandboxes and is graded in a fresh container. Killing node B's raylet is the node dying.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent_rl.train.config import load_train_config

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _raylet_pid(node_manager_port: int) -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"raylet") and f"--node_manager_port={node_manager_port}".encode() in argv:
                return int(proc.name)
    return None


@pytest.fixture(scope="module")
def cluster():
    head, node_b_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", "--port", str(head), "--include-dashboard=false", *common],
                   env=env, check=True, capture_output=True, timeout=180)
    subprocess.run([RAY, "start", "--address", f"127.0.0.1:{head}", "--node-manager-port", str(node_b_port), *common],
                   env=env, check=True, capture_output=True, timeout=180)
    yield {"address": f"127.0.0.1:{head}", "node_b_port": node_b_port}
    import ray

    ray.shutdown()
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=180)


def _config(tiny_dir: Path, out: Path, address: str, tasks_per_step: int):
    return load_train_config(REPO / "configs" / "smoke-cpu.yaml", [
        f"model.name={tiny_dir}", f"output_dir={out}", "max_steps=1", "checkpoint.every=0",
        "cluster.kind=ray", f"cluster.address={address}", "cluster.episodes_per_worker=2",
        f"rollout.tasks_per_step={tasks_per_step}", "rollout.group_size=2",
        f"algorithm.mini_batch_size={tasks_per_step * 2}",
        "agent.max_turns=2", "env.max_turns=2", "agent.max_tokens_per_turn=24",
        "logging.progress=false", "logging.tensorboard=false", "algorithm.kl_beta=0",
    ])


def test_a_training_step_rolls_out_on_both_nodes(cluster, tiny_dir, tmp_path):
    from agent_rl.train.trainer import Trainer

    with Trainer(_config(tiny_dir, tmp_path / "run", cluster["address"], 2)) as trainer:
        row = trainer.train_step()
    assert row["trajectories"] == 4 and row["error_trajectories"] == 0
    assert row["rollout_nodes"] == 2 and row["rollout_retried"] == 0
    assert row["weight_sync_verified"]


def test_a_node_killed_mid_step_has_its_episodes_replayed_elsewhere(cluster, tiny_dir, tmp_path):
    from agent_rl.train.trainer import Trainer

    trainer = Trainer(_config(tiny_dir, tmp_path / "run", cluster["address"], 3))
    try:
        outcome: dict = {}
        step = threading.Thread(target=lambda: outcome.update(row=trainer.train_step()), daemon=True)
        step.start()
        raylet = _raylet_pid(cluster["node_b_port"])
        assert raylet is not None, "node B's raylet not found"
        deadline = time.monotonic() + 300
        in_flight = 0
        while not in_flight:  # wait until node B is playing episodes, then take the node down
            assert time.monotonic() < deadline and step.is_alive(), "node B never got an episode"
            runner = trainer.runner
            if runner is not None:
                b = [w for w in runner.workers if not w.dead and w.node != runner.workers[0].node]
                in_flight = b[0].busy if b else 0
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(raylet, signal.SIGKILL)
        step.join(timeout=600)
        assert not step.is_alive(), "the step did not finish after the node died"
        row = outcome["row"]
    finally:
        trainer.close()
    assert row["trajectories"] == 6 and row["error_trajectories"] == 0  # nothing lost
    assert row["rollout_lost_workers"] == 1 and row["rollout_retried"] >= 1
