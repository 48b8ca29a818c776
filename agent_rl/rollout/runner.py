"""Many episodes at once: G samples per task, N in flight, one asyncio loop.

`EpisodeRunner` plays every episode of `rollout`, `eval` and `train`. It owns the sandbox
pools (kept warm from one batch to the next) and reuses environments across episodes; an
environment whose episode broke is thrown away and the next episode gets a fresh one. Broken
episodes come back as error trajectories (`error` set, never trained on); they never abort
the batch. The chat template is probed once up front, because a drifting template is a
configuration error that no episode should be spent on.

Deadlines (`rollout.episode_deadline_s`, `rollout.step_deadline`; see deadlines.py): one clock
per episode covers environment creation, every turn, grading and teardown; an episode past it
is cut and comes back with `finish_reason == "deadline"`, truncated (trained on as a failure)
or dropped (`error` set) by `deadline_policy`. The step deadline cuts the stragglers of a
`collect` once most episodes are done; those never train, and with `partial_groups: refill`
a second, bounded round replays each of them (`deadlines.play_step`); an outside harness's
episodes (`rollout.harness`) are cut the same way, their harness process group killed. A cut or cancelled
episode's environment is closed in the background: that destroys its container, which
unblocks whatever thread still waits on it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import math
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, ClassVar, Mapping, Sequence

from pydantic import Field, field_validator, model_validator

from agent_rl.rollout.agent import AgentConfig, check_template, run_episode
from agent_rl.rollout.chat_template import ChatTokenizer
from agent_rl.rollout.deadlines import (Deadline, DeadlinePolicy, PartialGroupPolicy, Played, StepCutter,
                                         StepDeadline, play_step)
from agent_rl.rollout.harness import HarnessConfig, run_harness_episode
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
    episode_deadline_s: float | None = Field(None, gt=0)
    """Seconds per episode for everything: sandbox start, every turn, grading, teardown. The agent starts no turn that would leave less than deadline_reserve_s; past the deadline the episode is cut (finish_reason "deadline"). None: no deadline."""
    deadline_policy: DeadlinePolicy = "truncate"
    """An episode cut by its deadline: "truncate" keeps it as a truncated failure (reward 0.0, every token sampled so far, trained on), "drop" marks it an error (never trained on)."""
    deadline_reserve_s: float | None = Field(None, ge=0)
    """Seconds of the episode deadline kept for grading and teardown: no turn starts that would eat into them (the next turn is assumed as slow as the slowest so far). None: a fifth of episode_deadline_s, at most 60."""
    step_deadline: StepDeadline | None = None
    """Cut a step's stragglers once most of its episodes are done; None: every episode runs to its end (or its own deadline)."""
    harness: HarnessConfig | None = None
    """An outside agent harness plays the episodes through the recording gateway (a command template, or {command, timeout_s, env, log_dir}); None: our own agent loop. See agent_rl/rollout/harness.py."""

    @field_validator("harness", mode="before")
    @classmethod
    def _harness_shorthand(cls, value: Any) -> Any:
        return {"command": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _reserve_fits(self) -> "RolloutConfig":
        if self.deadline_reserve_s is not None and self.episode_deadline_s is not None \
                and self.deadline_reserve_s >= self.episode_deadline_s:
            raise ValueError(f"deadline_reserve_s ({self.deadline_reserve_s:g}) must be less than "
                             f"episode_deadline_s ({self.episode_deadline_s:g}): no turn could ever start")
        return self

    @property
    def reserve_s(self) -> float:
        """The grading reserve in effect (see `deadline_reserve_s`)."""
        if self.episode_deadline_s is None:
            return 0.0
        if self.deadline_reserve_s is not None:
            return self.deadline_reserve_s
        return min(60.0, self.episode_deadline_s / 5)

    @property
    def partial_group_policy(self) -> PartialGroupPolicy:
        """What a group that lost members trains on (`apply_partial_group_policy`): the step
        deadline's `partial_groups`, "keep" without one."""
        return self.step_deadline.partial_groups if self.step_deadline is not None else "keep"

    def new_deadline(self) -> Deadline:
        """The deadline of an episode starting now."""
        return Deadline.after(self.episode_deadline_s, reserve_s=self.reserve_s)


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


def _close_env_blocking(env: Any) -> None:
    """`_close_env` from a thread (no event loop of the caller's is involved)."""
    try:
        env.close() if hasattr(env, "close") else asyncio.run(env.aclose())
    except Exception as exc:  # closing a broken env must not break the run
        log.warning("closing environment failed: %s: %s", type(exc).__name__, exc)


def _cut_before_start(task: Any, deadline: Deadline, policy_version: int, group_index: int,
                      phase: str = "start") -> Trajectory:
    """An episode its deadline ended before it had an environment (or, `phase="queued"`, a
    slot): nothing was sampled, so it never trains whatever the policy."""
    return Trajectory(
        task_id=_task_id(task), finish_reason="deadline", truncated=True, policy_version=policy_version,
        group_index=group_index, grade={"deadline": True, "cut_by": deadline.cut_by, "phase": phase, "resolved": False},
        timings={"total_s": round(time.monotonic() - deadline.started, 4), "deadline_s": float(deadline.allowed_s or 0.0)},
    )


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
    then owns no sandboxes (test doubles, custom environments). `rollout` (the `rollout:`
    config section) sets the deadlines (`episode_deadline_s`, `deadline_policy`,
    `deadline_reserve_s`, `step_deadline`) and, unless `concurrency` is given, the concurrency.
    """

    def __init__(self, env_config: Any = None, *, concurrency: int | None = None,
                 env_factory: EnvFactory | None = None,
                 rollout: RolloutConfig | Mapping[str, Any] | None = None) -> None:
        from envs.episode_sandboxes import EpisodeSandboxes
        from envs.swe_env import EnvConfig

        # `rollout` brings the deadlines (and the concurrency, unless `concurrency` is given).
        self.rollout = RolloutConfig.from_config(rollout)
        if concurrency is None:
            concurrency = self.rollout.concurrency
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
        self._closing: set[concurrent.futures.Future[None]] = set()  # environments of cut episodes
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

    async def _aborrow_env(self, task: Any) -> Any:
        """`_borrow_env` off the event loop. If the caller is cut (a deadline) while the env is
        being made, the env is closed when it arrives instead of leaking its sandbox."""
        made = blocking_executor().submit(self._borrow_env, task)
        try:
            return await asyncio.wrap_future(made)
        except BaseException:
            made.add_done_callback(self._close_if_made)
            raise

    def _close_if_made(self, made: concurrent.futures.Future[Any]) -> None:
        if not made.cancelled() and made.exception() is None:
            self._close_in_background(made.result())

    def _close_in_background(self, env: Any) -> concurrent.futures.Future[None]:
        """Close `env` on the blocking pool without waiting: a cut episode's env may still be
        held by a thread blocked in it (closing destroys the container, which frees it).
        `close`/`aclose` of the runner wait for these."""
        closing = blocking_executor().submit(_close_env_blocking, env)
        with self._lock:
            self._closing.add(closing)
        closing.add_done_callback(self._closed_one)
        return closing

    def _closed_one(self, closing: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._closing.discard(closing)

    async def episode(
        self, task: Any, engine: Engine, tokenizer: ChatTokenizer, agent_config: AgentConfig, *,
        seed: int | None = None, policy_version: int = 0, group_index: int = 0, deadline: Deadline | None = None,
    ) -> Trajectory:
        """Play one episode of `task` on a borrowed environment, all of it under `deadline`
        (default: a fresh one from `rollout.episode_deadline_s`). Never raises for a broken or
        cut episode or environment: the trajectory comes back with `error` set or, cut,
        with `finish_reason == "deadline"` (see `_deadline_outcome`)."""
        deadline = deadline if deadline is not None else self.rollout.new_deadline()
        try:
            # Env construction may build images or start containers: keep the loop free.
            async with deadline.scope():
                env = await self._aborrow_env(task)
        except Exception as exc:
            if deadline.cut_by:
                return self._deadline_outcome(_cut_before_start(task, deadline, policy_version, group_index), deadline)
            log.warning("environment for %s could not be created: %s", _task_id(task), exc)
            return Trajectory(
                task_id=_task_id(task), finish_reason="error", policy_version=policy_version, group_index=group_index,
                error=f"environment could not be created: {type(exc).__name__}: {exc}",
            )
        traj: Trajectory | None = None
        try:
            traj = await run_episode(env, engine, tokenizer, agent_config, task=task, seed=seed,
                                     policy_version=policy_version, group_index=group_index, deadline=deadline)
            return self._deadline_outcome(traj, deadline)
        except asyncio.CancelledError:
            # The caller gave up on the episode (a step cut on a Ray worker is a cancelled task; so
            # is a closing producer's): nobody waits for teardown, so the env is closed in the
            # background, which destroys its container and frees any thread still blocked in it.
            self._close_in_background(env)
            env = None
            raise
        finally:
            if env is not None:
                await self._release_env(env, traj, deadline)

    async def _release_env(self, env: Any, traj: Trajectory | None, deadline: Deadline) -> None:
        """Teardown, inside the episode's deadline: an env that served a clean episode goes back
        to the idle list; a broken one is closed (it may hold a dead sandbox); a cut one, or one
        whose closing outlasts the deadline, is closed in the background."""
        if deadline.cut_by:
            self._close_in_background(env)
        elif traj is None or traj.error is not None or self._closed:
            closing = self._close_in_background(env)
            remaining = deadline.remaining()
            # Waited for in a thread: a wait that times out leaves nothing bound to this loop.
            _, late = await run_blocking(concurrent.futures.wait, [closing],
                                         None if math.isinf(remaining) else max(0.0, remaining))
            if late:
                log.warning("closing the environment of %s outlasts its deadline; it goes on in the background",
                            traj.task_id if traj else "an episode")
        else:
            with self._lock:
                self._idle.append(env)

    def _deadline_outcome(self, traj: Trajectory, deadline: Deadline) -> Trajectory:
        """Apply the policies to an episode a deadline cut: a step cut has no outcome (never
        trained); an episode cut by its own deadline is kept truncated or dropped by
        `deadline_policy`. An episode that stopped in time and was graded stays as it is."""
        if not deadline.cut_by or traj.error is not None:
            return traj
        where = f"cut after {deadline.allowed_s:g}s during {traj.grade.get('phase', 'start')}"
        if deadline.cut_by == "step":
            traj.error = f"step_deadline: {where} (the step's other episodes were done)"
        elif self.rollout.deadline_policy == "drop":
            traj.error = f"deadline: {where}"
        elif traj.num_sampled_tokens == 0:
            # Nothing sampled, nothing to learn: as a group member it would only add a phantom 0.
            traj.error = f"deadline: {where}, before the first reply"
        return traj

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
        if self.rollout.harness is not None:
            return await self._collect_harness(jobs, engine, tokenizer, agent_cfg, progress=progress,
                                               policy_version=policy_version)
        tally = _Tally()
        with _ProgressBar(0, enabled=progress) as bar:  # each round adds its episodes

            async def play(job: _Job, deadline: Deadline) -> Trajectory:
                return await self.episode(job.task, engine, tokenizer, agent_cfg, seed=episode_seed(base_seed, job.index),
                                          policy_version=policy_version, group_index=job.group_index, deadline=deadline)

            def done(traj: Trajectory) -> None:
                tally.add(traj)
                bar.update(tally)

            def play_round(round_jobs: Sequence[_Job], cutter: StepCutter) -> Awaitable[list[Trajectory]]:
                bar.grow(len(round_jobs))
                return self._play_round(round_jobs, cutter, play, done, policy_version)

            # A refill plays the cut member's task and group index on the seeds after the batch's
            # (the cut one's seed may well be what made it hang).
            return await play_step(jobs, self.rollout.step_deadline, play_round,
                                   lambda job: dataclasses.replace(job, index=len(jobs) + job.index))

    async def _play_round(self, jobs: Sequence[_Job], cutter: StepCutter,
                          play: Callable[[_Job, Deadline], Awaitable[Played]], done: Callable[[Played], None],
                          policy_version: int) -> list[Played]:
        """One round of a step: every job, `concurrency` at once, with `cutter` beside it (an
        episode that would start after it fired is cut where it waits). Per job, in order, a
        trajectory (a harness episode: its segments, a list)."""
        results: list[Played | None] = [None] * len(jobs)
        gate = asyncio.Semaphore(self.concurrency)  # made per call: each call may have its own loop

        async def one(k: int, job: _Job) -> None:
            async with gate:
                deadline = self.rollout.new_deadline()
                played: Played
                if cutter.fired:  # the round is over before this episode got a slot
                    cutter.cut_queued(deadline.cut)
                    played = self._deadline_outcome(
                        _cut_before_start(job.task, deadline, policy_version, job.group_index, phase="queued"), deadline)
                else:
                    with cutter.watching(deadline.cut):
                        played = await play(job, deadline)
            results[k] = played
            cutter.finished()
            done(played)

        watcher = asyncio.ensure_future(cutter.watch())
        try:
            await asyncio.gather(*(one(k, job) for k, job in enumerate(jobs)))
        finally:
            watcher.cancel()
        return [p for p in results if p is not None]

    async def _collect_harness(self, jobs: list[_Job], engine: Engine, tokenizer: ChatTokenizer,
                               agent_cfg: AgentConfig, *, progress: bool, policy_version: int) -> list[Trajectory]:
        """Every job played by `rollout.harness` through a gateway (`harness_gateway`) started
        for this call in this loop, under the step deadline as the agent loop's episodes are. A
        segmented episode gives several trajectories, kept together in job order."""
        harness = self.rollout.harness
        assert harness is not None
        tally = _Tally()
        async with self.harness_gateway(engine, tokenizer, agent_cfg) as gateway:
            with _ProgressBar(0, enabled=progress) as bar:

                async def play(job: _Job, deadline: Deadline) -> Played:
                    return await self.harness_episode(job.task, gateway, harness, group_index=job.group_index,
                                                      deadline=deadline, policy_version=policy_version)

                def done(played: Played) -> None:
                    for traj in played if isinstance(played, list) else [played]:
                        if traj.segment == 0:
                            tally.add(traj)
                    bar.update(tally)

                def play_round(round_jobs: Sequence[_Job], cutter: StepCutter) -> Awaitable[list[Played]]:
                    bar.grow(len(round_jobs))
                    return self._play_round(round_jobs, cutter, play, done, policy_version)

                return await play_step(jobs, self.rollout.step_deadline, play_round,
                                       lambda job: dataclasses.replace(job, index=len(jobs) + job.index))

    def harness_gateway_config(self, agent_cfg: AgentConfig) -> dict[str, Any]:
        """The gateway settings of `harness_gateway`: the agent's sampling (temperature, top_p,
        max_tokens_per_turn, max_total_tokens) and the harness's tool-call format."""
        return {"temperature": agent_cfg.sampling.temperature, "top_p": agent_cfg.sampling.top_p,
                "max_tokens": agent_cfg.max_tokens_per_turn, "max_context_tokens": agent_cfg.max_total_tokens,
                "tool_call_format": self.rollout.harness.tool_call_format if self.rollout.harness else "auto"}

    def harness_gateway(self, engine: Engine, tokenizer: ChatTokenizer, agent_cfg: AgentConfig) -> Any:
        """The recording gateway harness episodes talk to (an async context manager, served on
        loopback from the loop that enters it). It samples with the agent's settings
        (`harness_gateway_config`), whatever the harness asks."""
        from agent_rl.gateway.server import Gateway

        return Gateway(engine, tokenizer, model_name=getattr(engine, "name", "agent-rl"),
                       config=self.harness_gateway_config(agent_cfg))

    async def harness_episode(self, task: Any, gateway: Any, harness: HarnessConfig, *, group_index: int = 0,
                              deadline: Deadline | None = None, policy_version: int = 0) -> list[Trajectory]:
        """One episode of `task` played by the harness on a borrowed environment, under
        `deadline` (default: a new episode deadline; `collect` passes one the step deadline can
        cut); never raises for a broken episode (error trajectory instead)."""
        deadline = deadline if deadline is not None else self.rollout.new_deadline()
        env: Any = None
        trajectories: list[Trajectory] = []
        try:
            async with deadline.scope():
                env = await self._aborrow_env(task)
                remaining = deadline.remaining()
                timeout = None if math.isinf(remaining) else max(1.0, remaining - self.rollout.reserve_s)
                trajectories = await run_harness_episode(env, gateway, harness, task, group_index=group_index,
                                                         timeout_s=timeout)
        except asyncio.CancelledError:
            # The caller gave up on the episode (a step cut on a Ray worker, a closing producer):
            # the harness process is already killed and its session dropped (run_harness_episode);
            # nobody waits for teardown, so the env is closed in the background, as in `episode`.
            if env is not None:
                self._close_in_background(env)
                env = None
            raise
        except Exception as exc:
            if deadline.cut_by:
                # The harness process is killed and its session dropped (run_harness_episode):
                # a cut episode has no outcome, as `_cut_before_start` records for our own loop's.
                phase = "start" if env is None else "harness"
                trajectories = [self._deadline_outcome(
                    _cut_before_start(task, deadline, policy_version, group_index, phase=phase), deadline)]
            else:
                log.warning("harness episode of %s failed: %s: %s", _task_id(task), type(exc).__name__, exc)
                trajectories = [Trajectory(task_id=_task_id(task), finish_reason="error", group_index=group_index,
                                           error=f"harness episode failed: {type(exc).__name__}: {exc}")]
        finally:
            if env is not None:
                broken = not trajectories or any(t.error for t in trajectories) or bool(deadline.cut_by)
                await self._release_env(env, trajectories[0] if trajectories and not broken else None, deadline)
        return trajectories

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
        self._wait_background_closes()
        with self._lock:
            idle, self._idle = self._idle, []
        return idle

    def _wait_background_closes(self, timeout: float = 120.0) -> None:
        """Cut episodes' environments must be closed before the pools they came from."""
        with self._lock:
            closing = list(self._closing)
        _, late = concurrent.futures.wait(closing, timeout=timeout)
        if late:
            log.warning("%d environments of cut episodes were still closing after %gs", len(late), timeout)

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
        idle = await run_blocking(self._take_idle)  # it may wait for background closes
        await asyncio.gather(*(_close_env(env) for env in idle))
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
    rollout: RolloutConfig | Mapping[str, Any] | None = None,
) -> list[Trajectory]:
    """Play `group_size` episodes of every task, `concurrency` at a time.

    Returns trajectories ordered by task then group index. Episode i gets seed `seed + i`
    (default: `agent_config.sampling.seed`; None = unseeded). With `runner` (a long-lived
    `EpisodeRunner`, e.g. the trainer's) its environments and warm pools are used and it
    stays open; `concurrency`, `env_config` and `env_factory` are then the runner's. Without
    one, a runner is made for this call (`env_factory` or `SWEEnv(config=env_config)`), with
    the deadlines of `rollout` (a `RolloutConfig`; its group_size and concurrency are not
    used), and closed before returning.
    """
    RolloutConfig(group_size=group_size, concurrency=concurrency)  # validates the arguments
    if runner is not None:
        return await runner.collect(tasks, engine, tokenizer, group_size=group_size, agent_config=agent_config,
                                    progress=progress, policy_version=policy_version, seed=seed)
    async with EpisodeRunner(env_config, concurrency=concurrency, env_factory=env_factory, rollout=rollout) as own:
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
        # Ended by a deadline: stopped before a turn and graded, or cut where it stood.
        "deadline_episodes": sum(t.finish_reason == "deadline" for t in trajectories),
        "deadline_cuts": sum(bool(t.grade.get("deadline")) for t in trajectories),
        # Played in place of a member the step deadline cut (`partial_groups: refill`).
        "refilled_episodes": sum(t.refill for t in trajectories),
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

    def grow(self, more: int) -> None:
        """`more` episodes joined the batch (each round of a step adds its own: refills come later)."""
        self.total += more
        if self._progress is not None and more:
            self._progress.update(self._task, total=self.total)

    def update(self, tally: _Tally) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=tally.done, solved=tally.solved, mean_reward=tally.mean_reward, errors=tally.errors
            )

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
