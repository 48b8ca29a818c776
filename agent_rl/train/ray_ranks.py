"""Training ranks placed on a Ray cluster (`cluster.trainer_ranks: N`), in place of torchrun.

`agent-rl train` with `cluster: {kind: ray, trainer_ranks: N}` starts N Ray actors, round-robin
over the live nodes (hard affinity) that have `trainer_rank_gpus` GPUs each (Ray reserves them and sets each
actor's CUDA_VISIBLE_DEVICES, so every rank sees its GPU as cuda:0). Each actor sets what
torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT: rank 0's node and a port free
there) and runs the same `Trainer` (FSDP2 over gloo on CPU, nccl on CUDA; train/distributed).
Rank 0 is the driver as under torchrun: its rollouts go to the cluster's rollout workers (and
engine replicas, if any). Ranks on several machines share `output_dir` (each writes its shard of
the checkpoint there): a shared filesystem.

A rank that dies ends the run with an error naming it; `--resume` continues from the last
sharded checkpoint, with any number of ranks (train/checkpoint.py).
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

START_TIMEOUT_S = 600.0  # for every rank to be placed


def _rank_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class TrainerRank:
        """One training rank: the trainer, in this actor's process."""

        def where(self) -> tuple[str, str]:
            """(node id, node address) of this rank."""
            return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

        def free_port(self) -> int:
            import socket

            with socket.socket() as sock:
                sock.bind(("", 0))
                return int(sock.getsockname()[1])

        def train(self, config: Any, resume: bool | str, rank: int, world: int, master: str,
                  port: int) -> list[dict[str, Any]]:
            import os

            from agent_rl.train.trainer import Trainer

            # What torchrun sets; Ranks.from_env reads it. Each rank sees its own GPU(s) only.
            os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0",
                               "MASTER_ADDR": master, "MASTER_PORT": str(port)})
            return Trainer(config, resume=resume).train()

    return TrainerRank


def train_on_ray(config: Any, resume: bool | str = False) -> list[dict[str, Any]]:
    """Run `config` as `cluster.trainer_ranks` ranks on the Ray cluster; returns rank 0's
    metrics history. Raises `RuntimeError` naming the rank when one fails or dies."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    from agent_rl.rollout.ray_engines import spread_over_nodes

    cluster = config.cluster
    world = int(cluster.trainer_ranks)
    if not ray.is_initialized():
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    gpus = float(cluster.trainer_rank_gpus)
    actor = _rank_class()
    # Rank r on node r mod n, hard: soft affinity let a fresh cluster's ranks pile onto one node.
    ranks = [actor.options(num_gpus=gpus, max_restarts=0, scheduling_strategy=strategy).remote()
             for strategy in spread_over_nodes(world, gpus, "training ranks")]
    try:
        try:
            placed = ray.get([rank.where.remote() for rank in ranks], timeout=START_TIMEOUT_S)
        except GetTimeoutError:
            raise RuntimeError(f"{world} training ranks could not all be placed within {START_TIMEOUT_S:g}s (each "
                               f"needs {gpus:g} GPU(s) on its node: are they free?)") from None
        master = placed[0][1]
        port = ray.get(ranks[0].free_port.remote())
        log.info("training ranks: %s; rendezvous at %s:%d",
                 ", ".join(f"{r}@{node[:12]}" for r, (node, _) in enumerate(placed)), master, port)
        # The validated config itself (a dump would drop what it never prints, an API key).
        refs = [rank.train.remote(config, resume, r, world, master, port) for r, rank in enumerate(ranks)]
        pending = {ref: r for r, ref in enumerate(refs)}
        histories: dict[int, list[dict[str, Any]]] = {}
        while pending:
            # The first rank to fail ends the run: the others would wait in a collective until
            # their timeout (distributed.timeout_s, hours).
            done, _ = ray.wait(list(pending), num_returns=1)
            r = pending.pop(done[0])
            try:
                histories[r] = ray.get(done[0])
            except (RayActorError, RayTaskError) as exc:
                raise RuntimeError(f"training rank {r} of {world} failed: {type(exc).__name__}: {exc}") from exc
        return histories[0]
    finally:
        for rank in ranks:
            ray.kill(rank)
