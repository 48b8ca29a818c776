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
- Deadlines: each worker's runner enforces the episode deadline on its own episodes. The step
  deadline is the driver's (it alone sees the whole step): once `after_fraction` of the step's
  episodes are back and `grace_s` has passed, each episode still on a worker is cut by
  `ray.cancel` of its task (the worker's asyncio task is cancelled: its runner closes the
  episode's environment in the background, which destroys the container), and one still
  waiting for a worker is cut where it waits. A cut comes back as a step-cut trajectory made
  here (phase "remote" or "queued"; its turns stay on the worker), never trained. Refill
  rounds (`partial_groups: refill`) run through the same `deadlines.play_step` as in process.
  A worker whose node dies after the step fired is not replayed: the episode is cut.
- Outside harnesses (`rollout.harness`): each worker runs the harness process on its own node,
  against its own recording gateway (agent_rl/gateway), served on that node's loopback from
  the worker's event loop in front of the driver's engine (token mode, as above) with the
  settings `EpisodeRunner.harness_gateway` gives it; started at the worker's first harness
  episode, kept for the following ones, stopped in `close`. So {base_url} and {exec_url} are
  that gateway's, {python} the worker's interpreter, {task_file} and {log_dir} paths on that
  node (the harness and what it imports must be installed there). The episode is `EpisodeRunner.harness_episode` on the worker and comes back as its
  segments, kept together in job order; node loss, the episode deadline and the step deadline
  apply as to our own episodes. A step cut cancels the worker's task: the harness's process
  group is killed, its gateway session dropped, and its environment closed in the background
  (the container destroyed).

Engine replicas and trainer ranks are not placed by Ray here: trainer ranks run under
torchrun (train/distributed), engine replicas behind any OpenAI-compatible load balancer.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, ClassVar, Literal, Sequence

from pydantic import Field, model_validator

from agent_rl.rollout.deadlines import Played, StepCutter
from agent_rl.rollout.trajectory import Trajectory
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
    """How often an episode lost with its node (or its engine replica) is played again elsewhere."""
    engine_replicas: int = Field(0, ge=0)
    """ray + engine.kind hf: policy replicas placed on the cluster as Ray actors, spread over the
    nodes, each serving the policy; episodes generate on their node's replica, the trainer pushes
    each update to all (rollout/ray_engines.py). 0: the trainer's own engine serves the workers."""
    engine_replica_gpus: float = Field(0.0, ge=0)
    """GPUs Ray reserves for each replica (> 0: the replica runs on cuda); 0: on CPU."""
    trainer_ranks: int = Field(0, ge=0)
    """ray: `agent-rl train` runs this many training ranks as Ray actors (in place of torchrun;
    train/ray_ranks.py), round-robin over the nodes; 0 or 1: the trainer is this process."""
    trainer_rank_gpus: float = Field(0.0, ge=0)
    """GPUs Ray reserves for each training rank (set model.device cuda with it); 0: on CPU."""

    @model_validator(mode="after")
    def _placement_needs_ray(self) -> "ClusterConfig":
        placed = {"engine_replicas": self.engine_replicas, "engine_replica_gpus": self.engine_replica_gpus,
                  "trainer_ranks": self.trainer_ranks, "trainer_rank_gpus": self.trainer_rank_gpus}
        if self.kind != "ray" and any(placed.values()):
            raise ValueError(f"{', '.join(k for k, v in placed.items() if v)} place work on a Ray cluster: set kind ray")
        return self


def _remote_worker_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class RolloutWorker:
        """An EpisodeRunner on one node: sandboxes on that node's Docker engine; with
        `rollout.harness`, also that node's recording gateway (see `harness_episode`)."""

        def __init__(self, env_config: dict[str, Any], concurrency: int, rollout: dict[str, Any] | None = None) -> None:
            from agent_rl.rollout.runner import EpisodeRunner

            # `rollout` carries the episode deadline (each worker enforces it on its own
            # episodes) and the harness, if any.
            self.runner = EpisodeRunner(env_config, concurrency=concurrency, rollout=rollout)
            self.node = ray.get_runtime_context().get_node_id()
            self._tokenizers: dict[str, Any] = {}
            # Recording gateways by (engine URL, served model, tokenizer, gateway settings):
            # started at the first harness episode, kept across episodes, stopped in close().
            self._gateways: dict[str, Any] = {}
            self._gateway_lock = asyncio.Lock()

        def node_id(self) -> str:
            return self.node

        def _tokenizer(self, spec: str) -> Any:
            from agent_rl.engines.models import load_tokenizer

            if spec not in self._tokenizers:
                self._tokenizers[spec] = load_tokenizer(spec)
            return self._tokenizers[spec]

        async def episode(self, task: Any, engine_url: str, served_model: str, tokenizer_spec: str,
                          agent_config: dict[str, Any], seed: int | None, policy_version: int,
                          group_index: int) -> tuple[Any, str]:
            from agent_rl.engines.openai_http import OpenAIEngine
            from agent_rl.rollout.agent import AgentConfig

            tokenizer = self._tokenizer(tokenizer_spec)
            engine = OpenAIEngine(engine_url, served_model, tokenizer=tokenizer, mode="tokens")
            try:
                traj = await self.runner.episode(task, engine, tokenizer, AgentConfig.from_config(agent_config),
                                                 seed=seed, policy_version=policy_version, group_index=group_index)
            finally:
                await engine.close()
            return traj, self.node

        async def harness_episode(self, task: Any, engine_url: str, served_model: str, tokenizer_spec: str,
                                  agent_config: dict[str, Any], group_index: int) -> tuple[list[Any], str]:
            """One `rollout.harness` episode on this node: the harness process, its workspace and
            grader here, talking to this worker's gateway on loopback ({base_url}, {exec_url};
            {python} is this worker's interpreter). Its segments, in order. A cancelled call
            (the driver's step cut) kills the harness, drops its session and closes the episode's
            environment in the background, which destroys the container."""
            harness = self.runner.rollout.harness
            if harness is None:
                raise RuntimeError("this rollout worker was started without rollout.harness")
            gateway = await self._gateway(engine_url, served_model, tokenizer_spec, agent_config)
            trajectories = await self.runner.harness_episode(task, gateway, harness, group_index=group_index)
            return trajectories, self.node

        async def _gateway(self, engine_url: str, served_model: str, tokenizer_spec: str,
                           agent_config: dict[str, Any]) -> Any:
            """This worker's gateway for these settings, started on first use in this actor's
            event loop, in front of the driver's engine over HTTP (token mode)."""
            from agent_rl.engines.openai_http import OpenAIEngine
            from agent_rl.rollout.agent import AgentConfig

            agent_cfg = AgentConfig.from_config(agent_config)
            key = json.dumps([engine_url, served_model, tokenizer_spec, self.runner.harness_gateway_config(agent_cfg)],
                             sort_keys=True)
            async with self._gateway_lock:  # episodes arriving together start one gateway
                gateway = self._gateways.get(key)
                if gateway is None:
                    tokenizer = self._tokenizer(tokenizer_spec)
                    engine = OpenAIEngine(engine_url, served_model, tokenizer=tokenizer, mode="tokens")
                    gateway = self.runner.harness_gateway(engine, tokenizer, agent_cfg)
                    try:
                        await gateway.start()  # loopback: only this node's harness processes reach it
                    except BaseException:
                        await engine.close()
                        raise
                    self._gateways[key] = gateway
            return gateway

        def gateway_sessions(self) -> int:
            """Sessions the worker's gateways still hold (0 between episodes; tests, monitoring)."""
            return sum(len(g.sessions) for g in self._gateways.values())

        async def close(self) -> None:
            gateways, self._gateways = list(self._gateways.values()), {}
            for gateway in gateways:
                try:
                    await gateway.stop()
                finally:
                    await gateway.engine.close()
            await self.runner.aclose()

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
    per_replica: Counter = field(default_factory=Counter)  # episodes per engine replica URL
    lost_replicas: list[str] = field(default_factory=list)  # per episode replayed: the replica it lost


def _failed(plan: _Plan, policy_version: int, error: str) -> Trajectory:
    """The record of an episode the cluster could not play (no worker, or lost too often)."""
    return Trajectory(task_id=plan.task.instance_id, finish_reason="error", group_index=plan.group_index,
                      policy_version=policy_version, error=error)


def _step_cut(plan: _Plan, policy_version: int, after_s: float, phase: str) -> Trajectory:
    """The record of an episode the step deadline cut on the cluster ("remote": its task was
    cancelled on a worker; "queued": it never got one). Its turns, if any, stay on the worker:
    a step cut never trains, as in process (runner.EpisodeRunner._deadline_outcome)."""
    where = "on a worker" if phase == "remote" else "waiting for a worker"
    return Trajectory(
        task_id=plan.task.instance_id, finish_reason="deadline", truncated=True, policy_version=policy_version,
        group_index=plan.group_index, grade={"deadline": True, "cut_by": "step", "phase": phase, "resolved": False},
        timings={"total_s": round(after_s, 4)},
        error=f"step_deadline: cut after {after_s:.1f}s {where} (the step's other episodes were done)")


class RayEpisodeRunner:
    """`EpisodeRunner`'s contract (`collect`, `prefetch`, `close`) over a Ray cluster."""

    def __init__(self, cluster: ClusterConfig, env_config: Any, *, engine_url: str, served_model: str,
                 tokenizer_spec: str, rollout: Any = None, replicas: Any = None) -> None:
        import ray

        from agent_rl.rollout.runner import RolloutConfig
        from envs.swe_env import EnvConfig

        self.cluster = cluster
        self.engine_url, self.served_model, self.tokenizer_spec = engine_url, served_model, tokenizer_spec
        # `replicas` (rollout/ray_engines.RayEngineReplicas): each episode goes to one of them
        # (its node's own first) instead of `engine_url`.
        self.replicas = replicas
        # `rollout` (a RolloutConfig or its keys): the workers enforce its episode deadline, this
        # driver its step deadline (see the module docstring).
        self.rollout = RolloutConfig.from_config(rollout)
        if not ray.is_initialized():
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        env = EnvConfig.from_config(env_config).model_dump(mode="json")
        rollout_keys = self.rollout.model_dump(mode="json")
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
        self.workers = self._started(self.workers)
        if not self.workers:
            raise RuntimeError(f"the Ray cluster at {cluster.address or 'auto'} has no live node")
        self.stats = RolloutStats()

    @staticmethod
    def _started(workers: list[_Worker]) -> list[_Worker]:
        """The workers that came up. `ray.nodes()` can still list a node that just died (its
        death is noticed only after missed heartbeats); a worker placed there dies before it
        starts, and the run goes on with the others, as `collect` does when a node dies later."""
        import ray
        from ray.exceptions import RayActorError

        started = []
        for worker in workers:
            try:
                ray.get(worker.handle.node_id.remote())
            except RayActorError:
                continue
            started.append(worker)
        return started

    @property
    def nodes(self) -> list[str]:
        return [w.node for w in self.workers if not w.dead]

    def _pick(self) -> _Worker | None:
        alive = [w for w in self.workers if not w.dead and w.busy < self.cluster.episodes_per_worker]
        return min(alive, key=lambda w: w.busy) if alive else None

    async def collect(self, tasks: Sequence[Any], engine: Any, tokenizer: Any, *, group_size: int = 1,
                      agent_config: Any = None, progress: bool = False, policy_version: int = 0,
                      seed: int | None = None) -> list[Trajectory]:
        """Play `group_size` episodes of every task across the workers, under the step deadline;
        results in task order (a harness episode's segments together, a refill right after the
        member it replaces). `engine` and `tokenizer` are the driver's (the workers use the
        served endpoint)."""
        from agent_rl.rollout.agent import AgentConfig
        from agent_rl.rollout.deadlines import play_step
        from agent_rl.rollout.runner import episode_seed

        agent_cfg = AgentConfig.from_config(agent_config)
        agent = agent_cfg.model_dump(mode="json")
        base_seed = seed if seed is not None else agent_cfg.sampling.seed
        plans = [_Plan(task, i * group_size + g, g, episode_seed(base_seed, i * group_size + g))
                 for i, task in enumerate(tasks) for g in range(group_size)]

        def play_round(round_plans: Sequence[_Plan], cutter: StepCutter) -> Awaitable[list[Trajectory]]:
            return self._play_round(round_plans, cutter, agent, policy_version)

        def refill_of(plan: _Plan) -> _Plan:  # the next seeds, as in process (runner.collect)
            index = len(plans) + plan.index
            return _Plan(plan.task, index, plan.group_index, episode_seed(base_seed, index))

        return await play_step(plans, self.rollout.step_deadline, play_round, refill_of)

    async def _play_round(self, plans: Sequence[_Plan], cutter: StepCutter, agent: dict[str, Any],
                          policy_version: int) -> list[Played]:
        """One round: every plan on the least busy live worker, with `cutter` beside it; per plan
        a trajectory (a harness episode: its segments, a list)."""
        results: list[Any] = [None] * len(plans)
        freed = asyncio.Event()  # a worker slot came free, or the cutter fired

        async def one(k: int, plan: _Plan) -> None:
            results[k] = await self._play(plan, cutter, freed, agent, policy_version)
            cutter.finished()

        async def watch() -> None:
            await cutter.watch()
            freed.set()  # the episodes waiting for a worker are cut where they wait

        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.gather(*(one(k, plan) for k, plan in enumerate(plans)))
        finally:
            watcher.cancel()
        return results

    async def _worker_for(self, cutter: StepCutter, freed: asyncio.Event) -> _Worker | None:
        """The least busy live worker with a free slot, once there is one; None when every
        worker is gone or the step deadline fired first."""
        while True:
            if cutter.fired or all(w.dead for w in self.workers):
                return None
            worker = self._pick()
            if worker is not None:
                return worker
            freed.clear()
            await freed.wait()

    async def _play(self, plan: _Plan, cutter: StepCutter, freed: asyncio.Event, agent: dict[str, Any],
                    policy_version: int) -> Played:
        """One episode on a worker, replayed elsewhere when its node dies, cut by the step deadline.
        With `rollout.harness` the worker plays it with the harness, and it comes back as a list
        (its segments; one trajectory when it broke or was cut)."""
        from ray.exceptions import RayActorError

        harness = self.rollout.harness is not None

        def outcome(traj: Trajectory) -> Played:
            return [traj] if harness else traj

        queued_at = time.monotonic()
        while True:
            worker = await self._worker_for(cutter, freed)
            if worker is None:
                if cutter.fired:
                    cutter.cut_queued(lambda: True)  # nothing to stop: it never left the driver
                    return outcome(_step_cut(plan, policy_version, time.monotonic() - queued_at, "queued"))
                return outcome(_failed(plan, policy_version, "every Ray rollout worker is gone"))
            url = self.engine_url if self.replicas is None else self.replicas.url_for(worker.node)
            if url is None:
                return outcome(_failed(plan, policy_version, "every engine replica is gone"))
            worker.busy += 1
            plan.attempts += 1
            started = time.monotonic()
            if harness:  # no seed: the gateway samples as the run says, whatever the harness asks
                ref = worker.handle.harness_episode.remote(plan.task, url, self.served_model,
                                                           self.tokenizer_spec, agent, plan.group_index)
            else:
                ref = worker.handle.episode.remote(plan.task, url, self.served_model, self.tokenizer_spec,
                                                   agent, plan.seed, policy_version, plan.group_index)
            cancelled = False

            def cancel() -> bool:
                nonlocal cancelled
                import ray

                cancelled = True
                ray.cancel(ref)  # the worker's asyncio task gets CancelledError; a finished one is untouched
                return True

            try:
                with cutter.watching(cancel):
                    played, node = await ref
            except Exception as exc:
                if cancelled:  # TaskCancelledError, or the node died as it was being cut
                    return outcome(_step_cut(plan, policy_version, time.monotonic() - started, "remote"))
                if not isinstance(exc, RayActorError):
                    raise
                self._lost(worker, exc)  # the worker (its node) died with this episode in flight
                if plan.attempts > self.cluster.episode_retries:
                    return outcome(_failed(plan, policy_version, f"lost with its node {plan.attempts} times"))
                self.stats.retried += 1
                continue
            finally:
                worker.busy -= 1
                freed.set()
            if self.replicas is not None and await self._replica_lost(played, url):
                if plan.attempts > self.cluster.episode_retries:
                    return outcome(_failed(plan, policy_version, f"lost with its engine replica {plan.attempts} times"))
                self.stats.retried += 1
                continue
            self.stats.per_node[node] += 1
            if self.replicas is not None:
                self.stats.per_replica[url] += 1
            return played

    async def _replica_lost(self, played: Played, url: str) -> bool:
        """Whether the episode failed because its engine replica died under it (then it is
        played again, on another): a failed episode whose replica no longer answers."""
        failed = [t for t in (played if isinstance(played, list) else [played]) if t.error is not None]
        if not failed:
            return False
        if await self.replicas.check(url, f"stopped answering during an episode ({failed[0].error[:200]})"):
            return False
        self.stats.lost_replicas.append(url)
        return True

    def _lost(self, worker: _Worker, exc: BaseException) -> None:
        if not worker.dead:
            worker.dead = True
            self.stats.lost_workers.append(worker.node)
            log.warning("rollout worker on node %s is gone (%s); replaying its episodes elsewhere",
                        worker.node[:12], type(exc).__name__)

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
