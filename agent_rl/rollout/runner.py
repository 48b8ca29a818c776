"""Many episodes at once: G samples per task, N concurrent environments, one asyncio loop.

Each of the N workers owns one environment (whose sandboxes come from the env's warm pool)
and plays episodes from a shared queue, so environments are reused across episodes. A
worker whose episode broke throws its environment away and makes a fresh one. Broken
episodes come back as error trajectories (`error` set, never trained on); they never abort
the batch. The chat template is probed once up front, because a drifting template is a
configuration error that no episode should be spent on.
"""
from __future__ import annotations

import asyncio
import logging
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

from pydantic import Field

from agent_rl.rollout.agent import AgentConfig, check_template, run_episode
from agent_rl.rollout.chat_template import ChatTokenizer
from agent_rl.engines.base import Engine
from agent_rl.rollout.trajectory import Trajectory
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


def default_env_factory(tasks: Sequence[Any], env_config: Any) -> EnvFactory:
    def make() -> Any:
        from envs.swe_env import SWEEnv

        return SWEEnv(tasks=list(tasks), config=env_config)

    return make


async def _close_env(env: Any) -> None:
    try:
        if hasattr(env, "aclose"):
            await env.aclose()
        else:
            await asyncio.to_thread(env.close)
    except Exception as exc:  # closing a broken env must not break the worker
        log.warning("closing environment failed: %s: %s", type(exc).__name__, exc)


def _episode_seed(base: int | None, job: _Job) -> int | None:
    return None if base is None else base + job.index


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
) -> list[Trajectory]:
    """Play `group_size` episodes of every task, `concurrency` at a time.

    Returns trajectories ordered by task then group index. `env_factory` makes one
    environment per worker (default: `SWEEnv(tasks=tasks, config=env_config)`). Episode i
    gets seed `seed + i` (default: `agent_config.sampling.seed`; None = unseeded).
    """
    rollout = RolloutConfig(group_size=group_size, concurrency=concurrency)
    agent_cfg = AgentConfig.from_config(agent_config)
    if not tasks:
        return []
    check_template(tokenizer, agent_cfg)
    base_seed = seed if seed is not None else agent_cfg.sampling.seed

    jobs = [
        _Job(index=i * rollout.group_size + g, task=task, group_index=g)
        for i, task in enumerate(tasks)
        for g in range(rollout.group_size)
    ]
    queue: asyncio.Queue[_Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    results: list[Trajectory | None] = [None] * len(jobs)
    tally = _Tally()

    async def play(env: Any, job: _Job) -> Trajectory:
        return await run_episode(
            env,
            engine,
            tokenizer,
            agent_cfg,
            task=job.task,
            seed=_episode_seed(base_seed, job),
            policy_version=policy_version,
            group_index=job.group_index,
        )

    with _ProgressBar(len(jobs), enabled=progress) as bar:

        def record(job: _Job, traj: Trajectory) -> None:
            results[job.index] = traj
            tally.add(traj)
            bar.update(tally)

        workers = [
            _Worker(env_factory or default_env_factory(tasks, env_config), play, policy_version)
            for _ in range(min(rollout.concurrency, len(jobs)))
        ]
        await asyncio.gather(*(w.run(queue, record) for w in workers))

    return [t for t in results if t is not None]


class _Worker:
    """Owns one environment and plays queued episodes on it until the queue is empty."""

    def __init__(self, make_env: EnvFactory, play: Callable[[Any, _Job], Any], policy_version: int) -> None:
        self.make_env = make_env
        self.play = play
        self.policy_version = policy_version
        self.env: Any = None

    async def run(self, queue: "asyncio.Queue[_Job]", record: Callable[[_Job, Trajectory], None]) -> None:
        try:
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                record(job, await self._episode(job))
        finally:
            await self._drop_env()

    async def _episode(self, job: _Job) -> Trajectory:
        if self.env is None:
            try:
                # Env construction may build images or start containers: keep the loop free.
                self.env = await asyncio.to_thread(self.make_env)
            except Exception as exc:
                log.warning("environment for %s could not be created: %s", _task_id(job.task), exc)
                return Trajectory(
                    task_id=_task_id(job.task),
                    finish_reason="error",
                    policy_version=self.policy_version,
                    group_index=job.group_index,
                    error=f"environment could not be created: {type(exc).__name__}: {exc}",
                )
        traj = await self.play(self.env, job)
        if traj.error is not None:
            # The env may hold a dead sandbox: the next episode gets a fresh one.
            await self._drop_env()
        return traj

    async def _drop_env(self) -> None:
        env, self.env = self.env, None
        if env is not None:
            await _close_env(env)


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
