"""Many episodes at once: G samples per task, N in flight, one asyncio loop.

`EpisodeRunner` plays every episode of `rollout`, `eval` and `train`. It owns the sandbox
pools (kept warm from one batch to the next) and reuses environments across episodes; an
environment whose episode broke is thrown away and the next episode gets a fresh one. Broken
episodes come back as error trajectories (`error` set, never trained on); they never abort
the batch. The chat template is probed once up front, because a drifting template is a
configuration error that no episode should be spent on.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import statistics
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

from pydantic import Field

from agent_rl.rollout.agent import AgentConfig, check_template, run_episode
from agent_rl.rollout.chat_template import ChatTokenizer
from agent_rl.engines.base import Engine
from agent_rl.rollout.trajectory import Trajectory
from sandboxes.executor import blocking_executor, run_blocking
from strictconfig import StrictModel

log = logging.getLogger(__name__)

EnvFactory = Callable[[], Any]


class RolloutConfig(StrictModel):
    """How episodes are played: G samples per task, N at once. The one `rollout:` section of
    `agent-rl train` and `agent-rl rollout` (the rollout command plays G=1 unless told)."""

    config_where: ClassVar[str] = "rollout"

    group_size: int = Field(4, ge=1)
    """Samples per task (G)."""
    concurrency: int = Field(4, ge=1)
    """Episodes in flight (N), one environment each."""
    tasks_per_step: int = Field(2, ge=1)
    """Training only: task groups per rollout batch (the rollout command plays every task)."""


@dataclass(frozen=True)
class _Job:
    index: int
    task: Any
    group_index: int


@dataclass
class _Tally:
    done: int = 0
    solved: int = 0
    errors: int = 0
    rewards: list[float] = field(default_factory=list)

    def add(self, traj: Trajectory) -> None:
        self.done += 1
        if traj.error is not None:
            self.errors += 1
            return
        self.rewards.append(traj.reward)
        self.solved += int(traj.resolved)

    @property
    def mean_reward(self) -> float:
        return statistics.fmean(self.rewards) if self.rewards else 0.0


def _task_id(task: Any) -> str:
    return str(getattr(task, "instance_id", task))


async def _close_env(env: Any) -> None:
    try:
        if hasattr(env, "aclose"):
            await env.aclose()
        else:
            await run_blocking(env.close)
    except Exception as exc:  # closing a broken env must not break the run
        log.warning("closing environment failed: %s: %s", type(exc).__name__, exc)


def episode_seed(base: int | None, index: int) -> int | None:
    """The seed of a batch's `index`-th episode (task-major, then group): the same wherever it runs."""
    return None if base is None else base + index


class EpisodeRunner:
    """The one episode runner: `rollout`, `eval` and `train` play every episode through it.

    It owns what outlives an episode: the sandboxes (an `EpisodeSandboxes`: per task image a
    warm pool of workspaces and one of pristine grading containers, with `use_pool`), and
    idle environments, which are reused (an env whose episode broke is closed instead). Make
    one per run, call `collect`/`episode` as often as needed (each may run under its own
    event loop: nothing here is bound to one), and close it at the end: that destroys every
    warm container. `collect` sizes the pools to its batch first (`prepare`), so after the
    first batch the next one finds its containers started in the background.

    `env_factory` (no arguments) replaces the SWEEnv the runner builds itself; the runner
    then owns no sandboxes (test doubles, custom environments).
    """

    def __init__(self, env_config: Any = None, *, concurrency: int = 4, env_factory: EnvFactory | None = None) -> None:
        from envs.episode_sandboxes import EpisodeSandboxes
        from envs.swe_env import EnvConfig

        RolloutConfig(concurrency=concurrency)  # validates it: >= 1
        self.concurrency = concurrency
        self.env_config = EnvConfig.from_config(env_config) if env_factory is None else env_config
        self.sandboxes = (
            # pool_size=0: only `prepare` keeps containers warm, so warm containers never exceed
            # the budget prepare hands out (the run's concurrency per role), however many images.
            # Removal of used containers runs in the background; close() waits for it.
            EpisodeSandboxes.for_env(self.env_config, pool_size=0, max_concurrency=concurrency,
                                     fill_threads=min(4, concurrency), background_close=True)
            if env_factory is None else None
        )
        self._env_factory = env_factory
        self._idle: list[Any] = []
        self._prefetching: concurrent.futures.Future[None] | None = None
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ environments

    def _make_env(self, task: Any) -> Any:
        if self._env_factory is not None:
            return self._env_factory()
        from envs.swe_env import SWEEnv

        assert self.sandboxes is not None
        return SWEEnv(tasks=[task], config=self.env_config, sandbox_factory=self.sandboxes.workspace,
                      grading_factory=self.sandboxes.grader)

    def _borrow_env(self, task: Any) -> Any:
        if self._closed:
            raise RuntimeError("the episode runner is closed")
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._make_env(task)

    async def episode(
        self, task: Any, engine: Engine, tokenizer: ChatTokenizer, agent_config: AgentConfig, *,
        seed: int | None = None, policy_version: int = 0, group_index: int = 0,
    ) -> Trajectory:
        """Play one episode of `task` on a borrowed environment. Never raises for a broken
        episode or environment: the trajectory comes back with `error` set."""
        try:
            # Env construction may build images or start containers: keep the loop free.
            env = await run_blocking(self._borrow_env, task)
        except Exception as exc:
            log.warning("environment for %s could not be created: %s", _task_id(task), exc)
            return Trajectory(
                task_id=_task_id(task), finish_reason="error", policy_version=policy_version, group_index=group_index,
                error=f"environment could not be created: {type(exc).__name__}: {exc}",
            )
        traj: Trajectory | None = None
        try:
            traj = await run_episode(env, engine, tokenizer, agent_config, task=task, seed=seed,
                                     policy_version=policy_version, group_index=group_index)
            return traj
        finally:
            if traj is None or traj.error is not None or self._closed:
                await _close_env(env)  # it may hold a dead sandbox: the next episode gets a fresh env
            else:
                with self._lock:
                    self._idle.append(env)

    async def collect(
        self, tasks: Sequence[Any], engine: Engine, tokenizer: ChatTokenizer, *, group_size: int = 1,
        agent_config: AgentConfig | dict[str, Any] | None = None, progress: bool = True, policy_version: int = 0,
        seed: int | None = None,
    ) -> list[Trajectory]:
        """Play `group_size` episodes of every task, `concurrency` at a time (see module `collect`)."""
        rollout = RolloutConfig(group_size=group_size, concurrency=self.concurrency)
        agent_cfg = AgentConfig.from_config(agent_config)
        if not tasks:
            return []
        check_template(tokenizer, agent_cfg)
        base_seed = seed if seed is not None else agent_cfg.sampling.seed
        await self.aprepare(tasks, rollout.group_size)
        jobs = [
            _Job(index=i * rollout.group_size + g, task=task, group_index=g)
            for i, task in enumerate(tasks)
            for g in range(rollout.group_size)
        ]
        results: list[Trajectory | None] = [None] * len(jobs)
        tally = _Tally()
        gate = asyncio.Semaphore(rollout.concurrency)  # made per call: each call may have its own loop

        with _ProgressBar(len(jobs), enabled=progress) as bar:

            async def one(job: _Job) -> None:
                async with gate:
                    traj = await self.episode(job.task, engine, tokenizer, agent_cfg,
                                              seed=episode_seed(base_seed, job.index), policy_version=policy_version,
                                              group_index=job.group_index)
                results[job.index] = traj
                tally.add(traj)
                bar.update(tally)

            await asyncio.gather(*(one(job) for job in jobs))
        return [t for t in results if t is not None]

    # ------------------------------------------------------------------ sandboxes

    def prepare(self, tasks: Sequence[Any], episodes_per_task: int = 1) -> None:
        """Size the warm pools to these tasks (their images are built if needed); returns once
        the pools are told, not when they are full. Tasks whose image cannot be built are
        skipped here: their episodes report the error."""
        if self.sandboxes is None or not self.sandboxes.use_pool:
            return
        from envs.task_images import task_image

        demand = []
        for task in tasks:
            try:
                demand.append((task_image(task), task, episodes_per_task))
            except Exception as exc:
                log.warning("no warm sandboxes for %s: %s", _task_id(task), exc)
        self.sandboxes.prepare(demand)

    def prefetch(self, tasks: Sequence[Any], episodes_per_task: int = 1) -> None:
        """`prepare` in the background and return at once: the trainer names the next step's
        tasks before its update, so their containers start while the GPU works. The next
        `collect` waits for it before sizing the pools itself."""
        if self.sandboxes is None or not self.sandboxes.use_pool or self._closed:
            return
        self._prefetching = blocking_executor().submit(self.prepare, list(tasks), episodes_per_task)

    async def aprepare(self, tasks: Sequence[Any], episodes_per_task: int = 1) -> None:
        """`prepare` with the images built concurrently, off the event loop."""
        if self.sandboxes is None or not self.sandboxes.use_pool:
            return
        from envs.task_images import task_image

        pending, self._prefetching = self._prefetching, None
        if pending is not None:
            await asyncio.wrap_future(pending)  # a late prefetch must not resize after us

        # Builds run side by side (task_image serializes per task); failures surface in prepare.
        await asyncio.gather(*(run_blocking(task_image, t) for t in tasks), return_exceptions=True)
        await run_blocking(self.prepare, tasks, episodes_per_task)

    def wait_warm(self, timeout: float = 120.0) -> bool:
        """Block until every pool holds its warm target (tests and benchmarks); False on timeout."""
        return self.sandboxes.wait_warm(timeout) if self.sandboxes is not None else True

    def stats(self) -> dict[str, int]:
        """Container counters of the owned sandboxes (see `EpisodeSandboxes.stats`)."""
        return self.sandboxes.stats() if self.sandboxes is not None else {}

    # ------------------------------------------------------------------ shutdown

    def _take_idle(self) -> list[Any]:
        self._closed = True
        pending, self._prefetching = self._prefetching, None
        if pending is not None:
            concurrent.futures.wait([pending])  # it may be resizing pools: let it finish first
        with self._lock:
            idle, self._idle = self._idle, []
        return idle

    def close(self) -> None:
        """Close idle environments and every owned pool (warm containers are destroyed)."""
        for env in self._take_idle():
            try:
                env.close() if hasattr(env, "close") else asyncio.run(env.aclose())
            except Exception as exc:
                log.warning("closing environment failed: %s: %s", type(exc).__name__, exc)
        if self.sandboxes is not None:
            self.sandboxes.close()

    async def aclose(self) -> None:
        """`close` from async code."""
        await asyncio.gather(*(_close_env(env) for env in self._take_idle()))
        if self.sandboxes is not None:
            await run_blocking(self.sandboxes.close)

    def __enter__(self) -> "EpisodeRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "EpisodeRunner":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def collect(
    tasks: Sequence[Any],
    engine: Engine,
    tokenizer: ChatTokenizer,
    *,
    group_size: int = 1,
    concurrency: int = 4,
    env_config: Any = None,
    agent_config: AgentConfig | dict[str, Any] | None = None,
    progress: bool = True,
    policy_version: int = 0,
    env_factory: EnvFactory | None = None,
    seed: int | None = None,
    runner: EpisodeRunner | None = None,
) -> list[Trajectory]:
    """Play `group_size` episodes of every task, `concurrency` at a time.

    Returns trajectories ordered by task then group index. Episode i gets seed `seed + i`
    (default: `agent_config.sampling.seed`; None = unseeded). With `runner` (a long-lived
    `EpisodeRunner`, e.g. the trainer's) its environments and warm pools are used and it
    stays open; `concurrency`, `env_config` and `env_factory` are then the runner's. Without
    one, a runner is made for this call (`env_factory` or `SWEEnv(config=env_config)`) and
    closed before returning.
    """
    RolloutConfig(group_size=group_size, concurrency=concurrency)  # validates the arguments
    if runner is not None:
        return await runner.collect(tasks, engine, tokenizer, group_size=group_size, agent_config=agent_config,
                                    progress=progress, policy_version=policy_version, seed=seed)
    async with EpisodeRunner(env_config, concurrency=concurrency, env_factory=env_factory) as own:
        return await own.collect(tasks, engine, tokenizer, group_size=group_size, agent_config=agent_config,
                                 progress=progress, policy_version=policy_version, seed=seed)


def collect_sync(*args: Any, **kwargs: Any) -> list[Trajectory]:
    """`collect` for callers without an event loop."""
    return asyncio.run(collect(*args, **kwargs))


def summarize(trajectories: Sequence[Trajectory]) -> dict[str, Any]:
    ok = [t for t in trajectories if t.error is None]
    tally = _Tally()
    for t in trajectories:
        tally.add(t)
    return {
        "episodes": len(trajectories),
        "errors": tally.errors,
        "solved": tally.solved,
        "solve_rate": tally.solved / len(ok) if ok else 0.0,
        "mean_reward": tally.mean_reward,
        "mean_turns": statistics.fmean(t.num_turns for t in ok) if ok else 0.0,
        "mean_sampled_tokens": statistics.fmean(t.num_sampled_tokens for t in ok) if ok else 0.0,
        "mean_total_tokens": statistics.fmean(len(t.prompt_ids) + len(t.response_ids) for t in ok) if ok else 0.0,
        "finish_reasons": dict(Counter(t.finish_reason for t in trajectories)),
        "trainable": sum(t.trainable for t in trajectories),
        "mean_timings": {
            key: statistics.fmean(t.timings.get(key, 0.0) for t in ok) if ok else 0.0
            for key in ("generation_s", "env_s", "grading_s", "total_s")
        },
        "error_messages": [f"{t.task_id}#{t.group_index}: {t.error}" for t in trajectories if t.error],
    }


class _ProgressBar:
    """A rich progress bar showing solved count and mean reward; a no-op when disabled."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> "_ProgressBar":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("rollout"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("solved {task.fields[solved]} · mean reward {task.fields[mean_reward]:.3f} · errors {task.fields[errors]}"),
                TimeElapsedColumn(),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("rollout", total=self.total, solved=0, mean_reward=0.0, errors=0)
        return self

    def update(self, tally: _Tally) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=tally.done, solved=tally.solved, mean_reward=tally.mean_reward, errors=tally.errors
            )

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
