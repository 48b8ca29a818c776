"""Asynchronous rollouts (`algorithm.mode: async`): episodes never wait for the trainer.

A producer thread runs its own event loop and keeps up to `concurrency` episodes in flight.
It starts task groups drawn from the run's task sampler (a *draw*: G episodes of one task),
plays them through the trainer's `EpisodeRunner` and engine, and puts each finished group
into a buffer. The trainer takes groups from the buffer (`take`), updates, and pushes
new weights into the engine while the producer keeps going; an episode in flight at that
moment samples its next turn with the new weights, and each token records the version that
sampled it (`Trajectory.token_versions`).

Staleness (η = `max_staleness`). A group's age when trained is the trainer's version minus
the oldest version that sampled any of its tokens. Two rules keep it ≤ η:

  admission   a draw starts only while  lag + ⌊pending / B⌋ ≤ η,  where pending counts the
              draws started but not taken, plus the groups the `take` in progress has already
              handed over (they fill the step it is taking, not a later one), B the groups per
              step, and lag is 1 while the trainer is updating (what starts now is trained
              after the next weights) and 0 while it waits. With η = 0 nothing starts during an
              update: synchronous RL.
  on take     a straggler can still finish late. A group older than η is never trained: it
              is dropped, counted, and its task is drawn again first (so no task is lost).

Draws are made on the trainer's thread, never the producer's. `start()` and every group
`take` hands over (or drops as stale) keep  running + buffered + to-replay + planned  draws
at T = (η + 1)·B, the most the admission rule lets be started and not taken: the producer
only pops the planned queue, so it never waits for a draw, and the sampler is touched by one
thread, under the producer's lock. The task stream is then a pure function of the sequence
of groups the trainer takes (and their outcomes), whatever the producer's timing. The price:
a draw is made up to T takes before it is trained, as deep as the admission rule lets a
started group wait anyway, so a task the pool retires is still played for the draws already
made.

Learning samplers (`tasks.sampler: adaptive`) are shown each group when `take` hands it over,
before the draw that refills its slot, not when it finishes: a finished group is still a
pending draw (a resume plays it again), so showing it at finish would count it twice across a
resume, and finishing order inside the producer is timing. A stale-dropped group is shown
too: its episodes are real graded outcomes, of a policy only somewhat older than η allows
(the pool's window spans several versions anyway), and hiding them would leave the tasks
whose episodes run long, the ones that go stale, unjudged. Its replay is a new attempt (new
seeds) and is shown again when taken.

Resume. `snapshot()` returns the sampler's state together with every draw made but not
trained (planned, in flight, buffered, waiting to be retried), taken under one lock so the two
agree: each draw is either shown to the sampler or pending, never both. A resumed producer
replays those draws before drawing new ones: no task is skipped or repeated, and a run given
the same groups makes the same draws as the uninterrupted one. Finished-but-untrained episodes
are played again (they were never trained on).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from agent_rl.rollout.runner import episode_seed
from agent_rl.rollout.trajectory import Trajectory
from agent_rl.train.task_pool import LearnsFromOutcomes, episode_outcomes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draw:
    """One task group the producer started: `index` is its place in the run's stream of draws
    (seeds derive from it), `attempt` counts replays after a stale drop."""

    index: int
    task_id: str
    attempt: int = 0

    def as_list(self) -> list[Any]:
        return [self.index, self.task_id, self.attempt]

    @classmethod
    def from_list(cls, row: Sequence[Any]) -> "Draw":
        return cls(int(row[0]), str(row[1]), int(row[2]))


@dataclass
class Group:
    """A finished draw: its G trajectories and the engine version it started under."""

    draw: Draw
    trajectories: list[Trajectory]
    started_version: int

    @property
    def oldest_version(self) -> int:
        played = [t for t in self.trajectories if t.error is None] or self.trajectories
        return min([t.oldest_version for t in played], default=self.started_version)


def may_start(pending: int, groups_per_step: int, max_staleness: int, updating: bool) -> bool:
    """The admission rule (module docstring): a draw started now is trained no more than
    `max_staleness` versions after the weights it starts with."""
    return (1 if updating else 0) + pending // groups_per_step <= max_staleness


def staleness(trainer_version: int, group: Group) -> int:
    return trainer_version - group.oldest_version


@dataclass
class ProducerStats:
    """Counters since the last `take_stats` call."""

    stale_dropped: int = 0
    stale_dropped_episodes: int = 0
    wait_s: float = 0.0  # the trainer blocked in take()


class AsyncRollouts:
    """The producer thread and its buffer. Make it, `start()`, call `take` from the trainer's
    thread, `weights_pushed()` after each weight push, `close()` at the end. `version()` is
    the version of the weights the engine serves (the trainer's, once pushed)."""

    def __init__(
        self,
        *,
        runner: Any,
        engine: Any,
        tokenizer: Any,
        tasks: dict[str, Any],
        sampler: Any,
        agent_config: Any,
        group_size: int,
        groups_per_step: int,
        max_staleness: int,
        concurrency: int,
        seed: int,
        version: Callable[[], int],
        replay: Sequence[Draw] = (),
        next_index: int = 0,
    ) -> None:
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self.runner, self.engine, self.tokenizer = runner, engine, tokenizer
        self.tasks, self.sampler, self.agent_config = tasks, sampler, agent_config
        self.group_size, self.groups_per_step = group_size, groups_per_step
        self.max_staleness, self.concurrency, self.seed = max_staleness, concurrency, seed
        self.version = version  # the trainer's current policy version (the engine's weights)
        self._cond = threading.Condition()
        self._replay: collections.deque[Draw] = collections.deque(replay)  # started, not trained: first
        self._planned: collections.deque[Draw] = collections.deque()  # drawn by the trainer's thread, not started
        self._running: dict[int, Draw] = {}  # draw index → draw, playing now
        self._buffer: collections.deque[Group] = collections.deque()
        self._next_index = next_index
        self._updating = False
        self._taking = 0  # groups the take() in progress has handed over so far
        self._stop = False
        self._error: BaseException | None = None
        self._stats = ProducerStats()
        self._episodes_running = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gateway: Any = None  # the recording gateway, when an outside harness plays

    # ------------------------------------------------------------------ trainer side
    def start(self) -> None:
        with self._cond:
            self._plan()
        self._thread = threading.Thread(target=self._thread_main, name="async-rollouts", daemon=True)
        self._thread.start()

    def take(self, n_groups: int, timeout_s: float | None = None) -> list[Group]:
        """The next `n_groups` groups fresh enough to train on, in the order they finished;
        blocks until they exist. Stale ones are dropped here, counted, and drawn again.

        From its return until `weights_pushed()` the trainer counts as updating (admission
        rule): what starts meanwhile is trained after the next weights, not these."""
        out: list[Group] = []
        started = time.monotonic()
        deadline = None if timeout_s is None else started + timeout_s
        with self._cond:
            self._updating = False  # waiting for data, not updating (dynamic sampling takes again)
            self._taking = 0
            self._cond.notify_all()
            while len(out) < n_groups:
                while not self._buffer and self._error is None and not self._stop:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"no rollout group finished within {timeout_s:.0f}s")
                    self._cond.wait(timeout=left)
                if self._error is not None:
                    raise RuntimeError(f"the rollout producer failed: {self._error}") from self._error
                if self._stop:
                    raise RuntimeError("the rollout producer is closed")
                group = self._buffer.popleft()
                self._show(group)  # before _plan: the draw that refills this slot knows the outcome
                if staleness(self.version(), group) > self.max_staleness:
                    # A straggler: it finished after groups started later. Play its task again.
                    if group.draw.attempt >= 2:
                        log.warning("draw %d (%s) was stale %d times: episodes outlast %d updates",
                                    group.draw.index, group.draw.task_id, group.draw.attempt + 1, self.max_staleness)
                    self._stats.stale_dropped += 1
                    # Episodes, not trajectories: a harness episode may be several segments.
                    self._stats.stale_dropped_episodes += sum(t.segment == 0 for t in group.trajectories)
                    self._replay.appendleft(Draw(group.draw.index, group.draw.task_id, group.draw.attempt + 1))
                    self._cond.notify_all()
                    continue
                out.append(group)
                self._taking = len(out)
                self._plan()
            self._stats.wait_s += time.monotonic() - started
            self._updating, self._taking = True, 0
            self._cond.notify_all()  # the buffer has room again: the producer may start more
        return out

    def weights_pushed(self) -> None:
        """The engine has the trainer's new weights: the update is over (admission rule)."""
        with self._cond:
            self._updating = False
            self._cond.notify_all()

    def snapshot(self) -> dict[str, Any]:
        """The sampler's state and every draw made but not yet trained (for a checkpoint)."""
        with self._cond:
            pending = sorted([*self._replay, *self._planned, *self._running.values(), *(g.draw for g in self._buffer)],
                             key=lambda d: d.index)
            return {"sampler": self.sampler.state_dict(), "pending": [d.as_list() for d in pending],
                    "next_index": self._next_index}

    def take_stats(self) -> ProducerStats:
        with self._cond:
            stats, self._stats = self._stats, ProducerStats()
            return stats

    def close(self) -> None:
        """Stop starting draws, cancel the episodes in flight and wait for the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(lambda: None)  # wake it
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=120)
            if self._thread.is_alive():
                log.warning("the rollout producer did not stop within 120 s")

    def _plan(self) -> None:
        """Draw new tasks until T = (η + 1)·B draws are pending (module docstring). Trainer's
        thread only, caller holds the lock: the sampler is never touched by the producer."""
        target = (self.max_staleness + 1) * self.groups_per_step
        while self._started() + len(self._replay) + len(self._planned) < target:
            self._planned.append(Draw(self._next_index, self.sampler.take(1)[0]))
            self._next_index += 1

    def _show(self, group: Group) -> None:
        """A learning sampler sees the group's graded episodes (caller holds the lock)."""
        outcomes = episode_outcomes(group.trajectories)
        if outcomes and isinstance(self.sampler, LearnsFromOutcomes):
            self.sampler.observe(group.draw.task_id, outcomes)

    # ------------------------------------------------------------------ producer side
    def _started(self) -> int:
        """Draws started and not yet taken: what the admission rule counts."""
        return len(self._running) + len(self._buffer)

    def _next_draw(self) -> Draw | None:
        """The next draw to start, or None when the admission rule or the episode budget says
        wait. Caller holds the lock."""
        if self._stop or self._episodes_running + self.group_size > max(self.concurrency, self.group_size):
            return None
        # Groups this take has handed over still count: without them a draw started while the
        # trainer waits for the rest of its step would land one step later than the rule allows.
        if not may_start(self._started() + self._taking, self.groups_per_step, self.max_staleness, self._updating):
            return None
        if self._replay:
            # Draws to play again (from a checkpoint, or dropped as stale) go before new ones.
            return self._replay.popleft()
        return self._planned.popleft() if self._planned else None

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._produce())
        except BaseException as exc:  # the trainer sees it at its next take()
            log.exception("the rollout producer failed")
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            # An HTTP engine keeps a session per calling loop; this one's must close before
            # the loop does (a closed loop's session can no longer be closed).
            release = getattr(self.engine, "release_session", None)
            if release is not None:
                try:
                    loop.run_until_complete(release())
                except Exception:  # the run is ending either way
                    log.debug("closing the producer's engine session failed", exc_info=True)
            loop.close()

    async def _produce(self) -> None:
        harness = getattr(getattr(self.runner, "rollout", None), "harness", None)
        if harness is None:
            await self._produce_draws()
            return
        # An outside harness plays through a recording gateway served from this loop, for the
        # producer's whole life: episodes in flight across a weight push keep their sessions,
        # and each recorded call carries the version that sampled it.
        async with self.runner.harness_gateway(self.engine, self.tokenizer, self.agent_config) as gateway:
            self._gateway = gateway
            await self._produce_draws()

    async def _produce_draws(self) -> None:
        playing: set[asyncio.Task[None]] = set()
        try:
            while True:
                with self._cond:
                    if self._stop:
                        break
                    draw = self._next_draw()
                    if draw is not None:
                        self._running[draw.index] = draw
                        self._episodes_running += self.group_size
                if draw is None:
                    await asyncio.sleep(0.02)  # woken by time: take(), updating() and close() are cheap to poll
                    continue
                task = asyncio.ensure_future(self._play(draw))
                playing.add(task)
                task.add_done_callback(playing.discard)
        finally:
            for task in list(playing):
                task.cancel()
            await asyncio.gather(*playing, return_exceptions=True)

    def _upcoming_tasks(self, draw: Draw) -> list[Any]:
        """This draw's task and the next few the producer will start: the warm pools are sized
        to them (sizing to this task alone would shrink the pools the others are about to use)."""
        with self._cond:
            planned = list(self._planned)[: max(1, self.concurrency // self.group_size)]
            ids = [draw.task_id, *(d.task_id for d in self._replay), *(d.task_id for d in planned)]
        return [self.tasks[t] for t in dict.fromkeys(ids)]

    async def _play(self, draw: Draw) -> None:
        version = self.version()
        task = self.tasks[draw.task_id]
        # Seeds depend on the draw and attempt only, wherever and whenever it runs.
        base = (self.seed * 1_000_003 + draw.index) * 1000 + draw.attempt * self.group_size
        try:
            await self.runner.aprepare(self._upcoming_tasks(draw), self.group_size)
            if self._gateway is not None:  # a harness episode is one or more segments
                played = await asyncio.gather(*(
                    self.runner.harness_episode(task, self._gateway, self.runner.rollout.harness, group_index=g)
                    for g in range(self.group_size)))
                trajectories = [t for segments in played for t in segments]
            else:
                trajectories = await asyncio.gather(*(
                    self.runner.episode(task, self.engine, self.tokenizer, self.agent_config,
                                        seed=episode_seed(base, g) % (2**31 - 1), policy_version=version,
                                        group_index=g)
                    for g in range(self.group_size)))
        except asyncio.CancelledError:
            with self._cond:
                self._episodes_running -= self.group_size
            raise
        except BaseException as exc:
            with self._cond:
                self._episodes_running -= self.group_size
                self._error = exc
                self._cond.notify_all()
            return
        with self._cond:
            self._episodes_running -= self.group_size
            self._running.pop(draw.index, None)
            self._buffer.append(Group(draw, list(trajectories), version))
            self._cond.notify_all()
