"""Rollouts on a real two-node Ray cluster: a training step whose episodes run on both nodes,
a node killed mid-step whose in-flight episodes are replayed on the other one, and the step
deadline cutting a hung episode on a worker (its container destroyed) and refilling it.

The cluster is what a user starts: `ray start --head` and `ray start --address=...` as
separate processes (two nodes on one machine, each with its own raylet). The trainer joins
it, places one rollout worker per node and serves its own in-process engine (a tiny random
Llama with SmolLM2's tokenizer) to them over HTTP; every episode runs in real Docker
sandboxes and is graded in a fresh container. Killing node B's raylet is the node dying.
"""
from __future__ import annotations

import asyncio
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
    head = _free_port()
    # RAY_memory_monitor_refresh_ms=0: Ray's own OOM killer stops workers once the machine is
    # 95% used, and the whole suite's pytest process holds GBs of models by then (a fresh-clone
    # CI run saw workers killed at 22.5 of 23.5 GB); the kernel's OOM killer still applies.
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "RAY_memory_monitor_refresh_ms": "0"}
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", "--port", str(head), "--include-dashboard=false", *common],
                   env=env, check=True, capture_output=True, timeout=180)
    try:
        # Picked once the head's own processes hold their ports (one of them could take it).
        node_b_port = _free_port()
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{head}", "--node-manager-port", str(node_b_port),
                        *common], env=env, check=True, capture_output=True, timeout=180)
        yield {"address": f"127.0.0.1:{head}", "node_b_port": node_b_port}
    finally:
        import ray

        ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=180)


def _config(tiny_dir: Path, out: Path, address: str, tasks_per_step: int, *extra: str):
    return load_train_config(REPO / "configs" / "smoke-cpu.yaml", [
        f"model.name={tiny_dir}", f"output_dir={out}", "max_steps=1", "checkpoint.every=0",
        "cluster.kind=ray", f"cluster.address={address}", "cluster.episodes_per_worker=2",
        f"rollout.tasks_per_step={tasks_per_step}", "rollout.group_size=2",
        f"algorithm.mini_batch_size={tasks_per_step * 2}",
        "agent.max_turns=2", "env.max_turns=2", "agent.max_tokens_per_turn=24",
        "logging.progress=false", "logging.tensorboard=false", "algorithm.kl_beta=0", *extra,
    ])


def test_a_training_step_rolls_out_on_both_nodes(cluster, tiny_dir, tmp_path):
    from agent_rl.train.trainer import Trainer

    with Trainer(_config(tiny_dir, tmp_path / "run", cluster["address"], 2)) as trainer:
        row = trainer.train_step()
    assert row["trajectories"] == 4 and row["error_trajectories"] == 0
    assert row["rollout_nodes"] == 2 and row["rollout_retried"] == 0
    assert row["weight_sync_verified"]


def test_engine_replicas_on_both_nodes_serve_rollouts_take_updates_and_survive_a_loss(cluster, tiny_dir, tmp_path):
    """cluster.engine_replicas=2: one replica actor per node serves the policy; each episode
    generates on its own node's replica; the update reaches both and is verified on both. One
    replica killed between steps: the episodes sent to it fail, are played again on the other,
    and the next update goes to the survivor only."""
    import ray

    from agent_rl.train.trainer import Trainer

    config = _config(tiny_dir, tmp_path / "run", cluster["address"], 2, "cluster.engine_replicas=2")
    with Trainer(config) as trainer:
        replicas = trainer._replicas
        assert len(set(replicas.node_of.values())) == 2  # spread: one replica per node
        first = trainer.train_step()
        loaded = [e.policy_version for e in replicas.pool.replicas]  # as each replica reported it
        ray.kill(replicas.handles[1])
        second = trainer.train_step()
        survivors = [e.policy_version for e in replicas.pool.replicas]
    assert first["trajectories"] == 4 and first["error_trajectories"] == 0
    assert first["engine_replicas_used"] == 2 and first["rollout_nodes"] == 2
    assert first["weight_sync_verified"] and loaded == [1, 1]  # both loaded the update, both verified
    assert second["trajectories"] == 4 and second["error_trajectories"] == 0  # nothing lost
    assert second["rollout_lost_replicas"] == 1 and second["rollout_retried"] >= 1
    assert second["engine_replicas_live"] == 1 and survivors == [2]
    assert second["weight_sync_verified"]


def test_two_training_ranks_placed_on_both_nodes_train_and_checkpoint_a_step(cluster, tiny_dir, tmp_path, caplog):
    """cluster.trainer_ranks=2 in place of torchrun: one rank actor per node joins the process
    group (gloo), rank 0 rolls out on the cluster's workers, both take part in the update and
    each writes its shard of the checkpoint."""
    import logging

    from agent_rl.train.ray_ranks import train_on_ray

    out = tmp_path / "run"
    config = _config(tiny_dir, out, cluster["address"], 2, "cluster.trainer_ranks=2", "checkpoint.every=1")
    with caplog.at_level(logging.INFO, logger="agent_rl.train.ray_ranks"):
        history = train_on_ray(config)
    [placed] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training ranks:")]
    nodes = {part.split("@")[1] for part in placed.split(";")[0].removeprefix("training ranks: ").split(", ")}
    assert len(nodes) == 2, placed  # one rank per node
    [row] = history
    assert row["trajectories"] == 4 and row["error_trajectories"] == 0 and row["rollout_nodes"] == 2
    assert row["weight_sync_verified"]
    shards = sorted(p.name for p in (out / "checkpoints" / "step-000001" / "sharded").rglob("*.distcp"))
    assert len(shards) == 2, shards  # each rank wrote its own


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


HANG, LS = "```bash\nsleep 1000\n```", "```bash\nls\n```"


async def test_the_step_deadline_cuts_a_hung_episode_on_a_worker_and_refills_it(cluster):
    """The driver serves a scripted model (replies in call order: the first episode to ask
    runs a command that would hang for 1000 s, every other lists files) to workers on both
    nodes; three real Docker episodes of one task, one reply each. Once two are graded the step
    deadline cancels the hung one's Ray task, whose worker destroys its container, and the
    refill round plays the group's third member again on the cluster."""
    import docker
    from test_agent import ScriptedEngine

    from agent_rl.engines.models import load_tokenizer
    from agent_rl.rollout.deadlines import apply_partial_group_policy
    from agent_rl.rollout.ray_workers import ClusterConfig, RayEpisodeRunner, start_engine_server
    from envs.suites import load_suite
    from envs.task_images import task_image
    from sandboxes.executor import run_blocking

    tokenizer = load_tokenizer("smollm2-135m")
    task = load_suite("datekit", difficulty="easy")[0]
    await run_blocking(task_image, task)  # built here once, not by both workers at once
    class ServedScript(ScriptedEngine):
        context_window = 8192  # what the server checks prompts against

        async def generate(self, prompt_ids, sampling):
            generation = await super().generate(prompt_ids, sampling)
            generation.info["policy_version"] = 0  # what the server reports with each reply
            return generation

    engine = ServedScript(tokenizer, [HANG, LS, LS, LS])
    server, url = await start_engine_server(engine, model_name="scripted", base_spec="smollm2-135m", host="127.0.0.1")
    rollout = {"step_deadline": {"after_fraction": 0.6, "grace_s": 1.0, "partial_groups": "refill", "refill_s": 60.0}}
    runner = RayEpisodeRunner(ClusterConfig(kind="ray", address=cluster["address"], episodes_per_worker=2),
                              {"max_turns": 1, "command_timeout_s": 300.0}, engine_url=url, served_model="scripted",
                              tokenizer_spec="smollm2-135m", rollout=rollout)
    client = docker.from_env()
    try:
        started = time.monotonic()
        trajs = await runner.collect([task], engine, tokenizer, group_size=3,
                                     agent_config={"max_tokens_per_turn": 64}, progress=False)
        took = time.monotonic() - started
        # The worker closed the cancelled episode's environment: no container still runs the command.
        assert _rollout_worker_pids()  # (one per live node: the previous test took node B down)
        until = time.monotonic() + 30
        while await run_blocking(_running_command, client, "sleep 1000") and time.monotonic() < until:
            await asyncio.sleep(0.5)
        assert not await run_blocking(_running_command, client, "sleep 1000")
        stats = runner.take_stats()
    finally:
        await run_blocking(runner.close)
        await server.cleanup()
    assert took < 90, took
    assert len(trajs) == 4, [(t.finish_reason, t.error) for t in trajs]
    [hung] = [t for t in trajs if t.error is not None]
    assert (hung.finish_reason, hung.grade["cut_by"], hung.grade["phase"]) == ("deadline", "step", "remote")
    assert hung.error.startswith("step_deadline: ") and not hung.refill
    replacement = trajs[trajs.index(hung) + 1]
    assert replacement.refill and replacement.group_index == hung.group_index and replacement.error is None
    assert replacement.grade["instance_id"] == task.instance_id and replacement.trainable  # really graded
    kept, dropped = apply_partial_group_policy([trajs], 3, "refill")
    assert [len(g) for g in kept] == [3] and dropped == 0
    assert sum(stats.per_node.values()) == 3 and stats.retried == 0  # the cut one came back from no node


def _running_command(client, command: str) -> bool:
    """Whether a running container of a rollout worker (labelled with its pid) runs `command`."""
    import docker

    for pid in _rollout_worker_pids():
        for container in client.containers.list(filters={"label": f"agent-rl.owner-pid={pid}"}):
            try:
                processes = container.top()["Processes"] or []
            except docker.errors.APIError:  # removed (or stopping) since listed
                continue
            if any(command in " ".join(row) for row in processes):
                return True
    return False


def _rollout_worker_pids() -> list[int]:
    """Ray names an actor's process after its class (`ray::RolloutWorker...`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::RolloutWorker"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids
