"""Rollout workers on a Ray cluster: one per node, each driving sandboxes on its own node's
Docker engine, all generating through the driver's engine over HTTP.

`cluster: {kind: ray, address: HOST:PORT}` in a recipe makes the trainer (or any caller of
`collect`) use `RayEpisodeRunner` instead of the in-process `EpisodeRunner`:

- At start it joins the cluster (`ray.init(address=...)`; the cluster is the user's: `ray
  start --head` on one machine, `ray start --address=...` on the others) and places one
  `RolloutWorker` actor on every live node (node affinity), each holding an `EpisodeRunner`
  whose sandbox pools stay warm from step to step.
- The engine stays with the driver. Workers reach it as an OpenAI-compatible server in token
  mode: the driver's own `hf` engine is served on its event loop (engines/serve.py), an
  `openai` engine's server is used directly. Trajectories stay token-exact.
- `collect` hands each episode to the least busy live worker. When a worker's node dies, the
  episodes in flight there come back as actor errors: the worker is dropped and each of those
  episodes is played again from the start on another node (a half-played episode cannot move:
  its container died with the node). Nothing is lost; `retried` counts them.

Engine replicas and trainer ranks are not placed by Ray here: trainer ranks run under
torchrun (train/distributed), engine replicas behind any OpenAI-compatible load balancer.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field

from strictconfig import StrictModel

log = logging.getLogger(__name__)


class ClusterConfig(StrictModel):
    """Where rollouts run (`cluster:`): in this process, or on a Ray cluster's nodes."""

    config_where: ClassVar[str] = "cluster"

    kind: Literal["local", "ray"] = "local"
    """local: episodes in this process; ray: one rollout worker per node of a running Ray cluster."""
    address: str | None = None
    """ray: the cluster to join (HOST:PORT of `ray start --head`, or "auto"); None: ray's default."""
    engine_host: str = "127.0.0.1"
    """ray + hf engine: the address workers reach this process's engine server at (this machine's
    address on the cluster network when workers run on other machines)."""
    episodes_per_worker: int = Field(4, ge=1)
    """Episodes one worker plays at once."""
    episode_retries: int = Field(2, ge=0)
    """How often an episode lost with its node is played again elsewhere."""


def _remote_worker_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class RolloutWorker:
        """An EpisodeRunner on one node: sandboxes on that node's Docker engine."""

        def __init__(self, env_config: dict[str, Any], concurrency: int, rollout: dict[str, Any] | None = None) -> None:
            from agent_rl.rollout.runner import EpisodeRunner

            # `rollout` carries the episode deadline: each worker enforces it on its own episodes.
            self.runner = EpisodeRunner(env_config, concurrency=concurrency, rollout=rollout)
            self.node = ray.get_runtime_context().get_node_id()
            self._tokenizers: dict[str, Any] = {}

        def node_id(self) -> str:
            return self.node

        async def episode(self, task: Any, engine_url: str, served_model: str, tokenizer_spec: str,
                          agent_config: dict[str, Any], seed: int | None, policy_version: int,
                          group_index: int) -> tuple[Any, str]:
            from agent_rl.engines.models import load_tokenizer
            from agent_rl.engines.openai_http import OpenAIEngine
            from agent_rl.rollout.agent import AgentConfig

            if tokenizer_spec not in self._tokenizers:
                self._tokenizers[tokenizer_spec] = load_tokenizer(tokenizer_spec)
            tokenizer = self._tokenizers[tokenizer_spec]
            engine = OpenAIEngine(engine_url, served_model, tokenizer=tokenizer, mode="tokens")
            try:
                traj = await self.runner.episode(task, engine, tokenizer, AgentConfig.from_config(agent_config),
                                                 seed=seed, policy_version=policy_version, group_index=group_index)
            finally:
                await engine.close()
            return traj, self.node

        def close(self) -> None:
            self.runner.close()

    return RolloutWorker


@dataclass
class _Worker:
    handle: Any
    node: str
    busy: int = 0
    dead: bool = False


@dataclass
class _Plan:
    task: Any
    index: int
    group_index: int
    seed: int | None
    attempts: int = 0


@dataclass
class RolloutStats:
    """What the last `collect` did where: episodes per node, episodes replayed after a node died."""

    per_node: Counter = field(default_factory=Counter)
    retried: int = 0
    lost_workers: list[str] = field(default_factory=list)


class RayEpisodeRunner:
    """`EpisodeRunner`'s contract (`collect`, `prefetch`, `close`) over a Ray cluster."""

    def __init__(self, cluster: ClusterConfig, env_config: Any, *, engine_url: str, served_model: str,
                 tokenizer_spec: str, rollout: Any = None) -> None:
        import ray

        from agent_rl.rollout.runner import RolloutConfig
        from envs.swe_env import EnvConfig

        self.cluster = cluster
        self.engine_url, self.served_model, self.tokenizer_spec = engine_url, served_model, tokenizer_spec
        if not ray.is_initialized():
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        env = EnvConfig.from_config(env_config).model_dump(mode="json")
        # The workers enforce the episode deadline (`rollout`, a RolloutConfig or its keys); the
        # step deadline is not applied across the cluster yet.
        rollout_keys = RolloutConfig.from_config(rollout).model_dump(mode="json")
        worker_class = _remote_worker_class()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.workers: list[_Worker] = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
            handle = worker_class.options(scheduling_strategy=strategy, max_concurrency=cluster.episodes_per_worker + 2,
                                          max_restarts=0).remote(env, cluster.episodes_per_worker, rollout_keys)
            self.workers.append(_Worker(handle, node["NodeID"]))
        if not self.workers:
            raise RuntimeError(f"the Ray cluster at {cluster.address or 'auto'} has no live node")
        ray.get([w.handle.node_id.remote() for w in self.workers])  # every worker is up before the first step
        self.stats = RolloutStats()

    @property
    def nodes(self) -> list[str]:
        return [w.node for w in self.workers if not w.dead]

    def _pick(self) -> _Worker | None:
        alive = [w for w in self.workers if not w.dead and w.busy < self.cluster.episodes_per_worker]
        return min(alive, key=lambda w: w.busy) if alive else None

    async def collect(self, tasks: Sequence[Any], engine: Any, tokenizer: Any, *, group_size: int = 1,
                      agent_config: Any = None, progress: bool = False, policy_version: int = 0,
                      seed: int | None = None) -> list[Any]:
        """Play `group_size` episodes of every task across the workers; results in task order.
        `engine` and `tokenizer` are the driver's (the workers use the served endpoint)."""
        from ray.exceptions import RayActorError

        from agent_rl.rollout.agent import AgentConfig
        from agent_rl.rollout.runner import episode_seed
        from agent_rl.rollout.trajectory import Trajectory

        agent = AgentConfig.from_config(agent_config)
        base_seed = seed if seed is not None else agent.sampling.seed
        plans = [_Plan(task, i * group_size + g, g, episode_seed(base_seed, i * group_size + g))
                 for i, task in enumerate(tasks) for g in range(group_size)]
        results: list[Any] = [None] * len(plans)
        freed = asyncio.Event()

        async def play(plan: _Plan) -> None:
            while True:
                worker = self._pick()
                while worker is None:
                    if all(w.dead for w in self.workers):
                        results[plan.index] = Trajectory(task_id=plan.task.instance_id, finish_reason="error",
                                                         group_index=plan.group_index, policy_version=policy_version,
                                                         error="every Ray rollout worker is gone")
                        return
                    freed.clear()
                    await freed.wait()
                    worker = self._pick()
                worker.busy += 1
                plan.attempts += 1
                try:
                    traj, node = await worker.handle.episode.remote(
                        plan.task, self.engine_url, self.served_model, self.tokenizer_spec, agent.model_dump(mode="json"),
                        plan.seed, policy_version, plan.group_index)
                except RayActorError as exc:  # the worker (its node) died with this episode in flight
                    if not worker.dead:
                        worker.dead = True
                        self.stats.lost_workers.append(worker.node)
                        log.warning("rollout worker on node %s is gone (%s); replaying its episodes elsewhere",
                                    worker.node[:12], type(exc).__name__)
                    if plan.attempts > self.cluster.episode_retries:
                        results[plan.index] = Trajectory(
                            task_id=plan.task.instance_id, finish_reason="error", group_index=plan.group_index,
                            policy_version=policy_version, error=f"lost with its node {plan.attempts} times")
                        return
                    self.stats.retried += 1
                    continue
                finally:
                    worker.busy -= 1
                    freed.set()
                results[plan.index] = traj
                self.stats.per_node[node] += 1
                return

        await asyncio.gather(*(play(p) for p in plans))
        return results

    def take_stats(self) -> RolloutStats:
        """Where the episodes since the last call ran (the trainer reads this once per step)."""
        stats, self.stats = self.stats, RolloutStats()
        return stats

    def prefetch(self, tasks: Sequence[Any], episodes_per_task: int = 1) -> None:
        """Workers warm their own pools at each collect; nothing to start ahead here."""

    def close(self) -> None:
        import ray

        for worker in self.workers:
            if not worker.dead:
                try:
                    ray.get(worker.handle.close.remote(), timeout=120)
                except Exception as exc:  # a worker that cannot close is reaped by label later
                    log.warning("closing the rollout worker on %s: %s", worker.node[:12], exc)
                ray.kill(worker.handle)
        self.workers = []


async def start_engine_server(engine: Any, *, model_name: str, base_spec: str, host: str) -> tuple[Any, str]:
    """Serve `engine` (an HFEngine) on this event loop at host:<free port>; returns (runner, base_url).
    Ray workers generate through it; `await runner.cleanup()` stops it."""
    from aiohttp import web

    from agent_rl.engines.serve import build_app

    runner = web.AppRunner(build_app(engine, model_name, base_spec), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://{host}:{port}"
