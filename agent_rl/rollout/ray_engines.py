"""Engine replicas placed on a Ray cluster (`cluster.engine_replicas: N`).

Each replica is a Ray actor that loads the policy into an in-process engine (`engine.kind:
hf`, on `cuda` when `cluster.engine_replica_gpus` > 0, which Ray reserves for it) and serves
it on its node's address, as `agent-rl serve` would (token mode, `POST /v1/load_checkpoint`).
The actors are spread round-robin over the nodes. On the driver:

  the trainer's engine   a `ReplicaPool` over the replicas (engines/replicas.py): weight sync
                         writes one checkpoint folder that every replica loads (visible at the
                         same path on every node: one machine, or a shared filesystem) and is
                         verified replica by replica
  the rollout workers    each episode is sent to a live replica, the one on the worker's own
                         node when there is one (generation traffic stays on the node), else
                         the least used; an episode whose replica died under it is played
                         again on another (`RayEpisodeRunner`), as one lost with its node is

A replica that stops answering is given up for the rest of the run; the run goes on while one
is left. Replicas are not restarted: a restarted replica would serve the initial weights.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

START_TIMEOUT_S = 900.0  # placing the replicas and loading the model into each


def _replica_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class EngineReplica:
        """One served copy of the policy (an async actor: its server runs on the actor's loop)."""

        async def start(self, model: str, served_model: str, engine: dict[str, Any]) -> tuple[str, str]:
            from agent_rl.engines.hf import HFEngine
            from agent_rl.rollout.ray_workers import start_engine_server

            self.engine = HFEngine(model, **engine)
            host = ray.util.get_node_ip_address()
            self.server, url = await start_engine_server(self.engine, model_name=served_model, base_spec=model, host=host)
            return url, ray.get_runtime_context().get_node_id()

        async def stop(self) -> None:
            await self.server.cleanup()
            await self.engine.close()

    return EngineReplica


def spread_over_nodes(count: int, gpus: float, what: str) -> list[Any]:
    """Where each of `count` actors (`what`: engine replicas, training ranks) goes: round-robin
    over the live nodes that have the GPUs each needs.
    Hard affinity: Ray's own SPREAD, and soft affinity too, put both of two replicas on one node
    of two (a fresh cluster's second node is not always taken as available yet); a replica
    that cannot be placed is an error at start-up (`START_TIMEOUT_S`), not a silent pile-up."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes()
                   if n.get("Alive") and float(n.get("Resources", {}).get("GPU", 0.0)) >= gpus)
    if not nodes:
        raise RuntimeError(f"no live Ray node has the {gpus:g} GPU(s) each of the {what} needs")
    return [NodeAffinitySchedulingStrategy(node_id=nodes[i % len(nodes)], soft=False) for i in range(count)]


class RayEngineReplicas:
    """The replicas of one run: started on construction, `pool` is the trainer's engine,
    `url_for(node)` routes an episode, `close()` stops the actors."""

    def __init__(self, cluster: Any, engine: Any, *, model: str, tokenizer: Any) -> None:
        import ray
        from ray.exceptions import GetTimeoutError

        from agent_rl.engines.openai_http import OpenAIEngine
        from agent_rl.engines.replicas import ReplicaPool

        if not ray.is_initialized():
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        gpus = float(cluster.engine_replica_gpus)
        settings = {"device": "cuda" if gpus > 0 else "cpu", "dtype": engine.dtype,
                    "max_batch_size": engine.max_batch_size, "batch_wait_ms": engine.batch_wait_ms}
        actor = _replica_class()
        self.handles = [actor.options(num_gpus=gpus, scheduling_strategy=strategy, max_restarts=0).remote()
                        for strategy in spread_over_nodes(cluster.engine_replicas, gpus, "engine replicas")]
        try:
            started = ray.get([h.start.remote(model, model, settings) for h in self.handles], timeout=START_TIMEOUT_S)
        except GetTimeoutError:
            self._kill()
            raise RuntimeError(f"{cluster.engine_replicas} engine replica(s) did not start within {START_TIMEOUT_S:g}s "
                               f"(each needs {gpus:g} GPU(s) on its node: are they free?)") from None
        except Exception:
            self._kill()
            raise
        self.node_of = {url: node for url, node in started}
        self.handle_of = dict(zip((url for url, _ in started), self.handles))
        # Few retries: an unreachable replica is given up and the request goes to another.
        engines = [OpenAIEngine(url, model, tokenizer=tokenizer, mode="tokens", timeout_s=engine.timeout_s,
                                max_retries=1, backoff_s=0.2) for url, _ in started]
        self.pool = ReplicaPool(engines, labels=[url for url, _ in started])
        self.assigned: Counter = Counter()
        log.info("engine replicas: %s", ", ".join(f"{url} (node {node[:12]})" for url, node in started))

    def live_urls(self) -> list[str]:
        return [engine.base_url for engine in self.pool.replicas]

    def url_for(self, node: str) -> str | None:
        """A live replica for an episode on `node`: that node's own if it has one, else the least
        used; None when every replica is gone."""
        live = self.live_urls()
        local = [url for url in live if self.node_of.get(url) == node]
        choice = min(local or live, key=lambda url: self.assigned[url], default=None)
        if choice is not None:
            self.assigned[choice] += 1
        return choice

    async def check(self, url: str, why: str) -> bool:
        """Whether the replica at `url` still answers; if not, it is given up (with `why`)."""
        return await self.pool.check(url, why)  # the pool's labels are the replicas' URLs

    def close(self) -> None:
        """Stop the servers and the actors (the pool's HTTP sessions are the trainer's to close)."""
        import ray

        for handle in self.handles:
            try:
                ray.get(handle.stop.remote(), timeout=60)
            except Exception as exc:  # a dead replica has nothing left to stop
                log.debug("stopping an engine replica: %s", exc)
        self._kill()

    def _kill(self) -> None:
        import ray

        for handle in self.handles:
            try:
                ray.kill(handle)
            except Exception:  # already gone
                pass
        self.handles = []
