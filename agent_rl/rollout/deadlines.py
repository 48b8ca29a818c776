"""Deadlines: one clock per episode, a cut-off per step, and what a cut group trains on.

An episode's `Deadline` covers everything it does (environment and sandbox start, every turn,
grading, teardown). The agent loop reads it before each turn and stops early enough to grade
what it has; anything that still runs past it (a command that ignores its own timeout, a
stalled grader) is cut by an `asyncio.timeout` around each phase (`Deadline.scope`). The step
deadline (`StepDeadline`, run by a `StepCutter` beside each round of a step's episodes) cuts
the episodes still running once `after_fraction` of them are done and `grace_s` has passed: in
process by bringing their deadlines forward to now, so they are cut the same way; on Ray
workers by cancelling their remote tasks (ray_workers.py). A step cut has no outcome (a slow
episode is not a failed one): it never trains, whatever `deadline_policy` says.

`partial_groups` says what a group that lost members to the step cut trains on:

- "keep": the members left, if at least two remain; "drop": nothing (the whole group goes).
- "refill": one more round (`play_step`) plays a replacement for every member the step cut:
  the same task and group index, the next seeds, through the same episode path. The round
  has its own bound, `refill_s` (default: as long as the step took to reach
  `after_fraction`, at least `grace_s`), after which its stragglers are cut too: a refill can never become a
  straggler tail of its own, and there is no second refill. A refill that missed its bound
  (or broke) is simply a lost member: the group then trains as "keep" would. Refills carry
  `Trajectory.refill`; the member each replaces stays in the batch (cut, never trained) right
  before it, so the step's record shows both.

Blocking work (Docker calls in threads) cannot be cancelled: a cut abandons the thread and the
runner closes the episode's environment, which destroys its container and so unblocks it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import AsyncIterator, Awaitable, Callable, ClassVar, Iterator, Literal, Sequence, TypeVar

from pydantic import Field, model_validator

from agent_rl.rollout.trajectory import Trajectory
from strictconfig import StrictModel

log = logging.getLogger(__name__)

DeadlinePolicy = Literal["truncate", "drop"]
PartialGroupPolicy = Literal["keep", "drop", "refill"]
CutBy = Literal["", "episode", "step"]


class StepDeadline(StrictModel):
    """Cut the stragglers of a rollout step instead of letting one slow sandbox hold the batch."""

    config_where: ClassVar[str] = "rollout.step_deadline"

    after_fraction: float = Field(0.9, gt=0, le=1)
    """Once this fraction of the step's episodes has finished, the grace period starts (1.0: only when all have, i.e. never cut)."""
    grace_s: float = Field(30.0, ge=0)
    """Seconds the remaining episodes get after that; then they are cut (never trained on: they have no outcome)."""
    partial_groups: PartialGroupPolicy = "keep"
    """A group that lost members: "keep" trains on those left if at least two remain, "drop" drops the whole group, "refill" plays a replacement for each member the step cut (one round, bounded by refill_s), then trains as "keep"."""
    refill_s: float | None = Field(None, gt=0)
    """partial_groups "refill": seconds the refill round may run; refills still running then are cut (never trained). None: as long as the step took until after_fraction of its episodes were done, at least grace_s."""

    @model_validator(mode="after")
    def _refill_s_needs_refill(self) -> "StepDeadline":
        if self.refill_s is not None and self.partial_groups != "refill":
            raise ValueError(f"refill_s only bounds the refill round: set partial_groups to 'refill' "
                             f"(it is {self.partial_groups!r}) or drop refill_s")
        return self


class Deadline:
    """One episode's deadline: an instant of `time.monotonic()` (None: no deadline).

    `scope()` runs a phase under an `asyncio.timeout` at that instant; `cut()` moves the instant
    to now and fires every open scope. `cut_by` says what ended the episode ("" while nothing
    has): "episode" once its own deadline cut a phase, "step" once the step deadline did.
    """

    def __init__(self, at: float | None, *, reserve_s: float = 0.0, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started
        self.at = at
        self.reserve_s = reserve_s
        self.cut_by: CutBy = ""
        self._scopes: list[asyncio.Timeout] = []

    @classmethod
    def after(cls, seconds: float | None, *, reserve_s: float = 0.0) -> "Deadline":
        """A deadline `seconds` from now (None: none)."""
        now = time.monotonic()
        return cls(None if seconds is None else now + seconds, reserve_s=reserve_s, started=now)

    @property
    def allowed_s(self) -> float | None:
        """Seconds the episode was given (after a step cut: what it had when cut)."""
        return None if self.at is None else round(self.at - self.started, 4)

    def remaining(self) -> float:
        return math.inf if self.at is None else self.at - time.monotonic()

    def leaves_room_for(self, turn_s: float) -> bool:
        """Whether a turn of `turn_s` seconds still leaves the reserve for grading and teardown."""
        return self.cut_by == "" and self.remaining() >= turn_s + self.reserve_s

    @contextlib.asynccontextmanager
    async def scope(self) -> AsyncIterator[None]:
        """Run the body under this deadline: past it, the body is cancelled and TimeoutError raised."""
        loop = asyncio.get_running_loop()
        # asyncio's timeouts count in the loop's clock; convert rather than assume it is monotonic.
        timeout = asyncio.timeout_at(None if self.at is None else loop.time() + self.remaining())
        try:
            async with timeout:
                self._scopes.append(timeout)
                try:
                    yield
                finally:
                    self._scopes.remove(timeout)
        finally:
            if timeout.expired() and not self.cut_by:
                self.cut_by = "episode"

    def cut(self, by: CutBy = "step") -> bool:
        """End the episode now: open scopes fire, later ones expire at once, no new turn starts.
        False when something had already ended it (then nothing changes)."""
        if self.cut_by:
            return False
        self.cut_by = by
        now = time.monotonic()
        self.at = now if self.at is None else min(self.at, now)
        for timeout in list(self._scopes):
            timeout.reschedule(asyncio.get_running_loop().time())
        return True


class StepCutter:
    """When one round of a step's episodes is cut: once `needed` of them are done, `grace_s`
    later, every episode still running (or still waiting for a slot) is cut. `needed=None`:
    never (no step deadline); 0: `grace_s` after the round starts (the refill round).

    The runner wraps each running episode in `watching(cut)`, `cut` being how to end that one
    (bring its deadline forward, cancel its remote task) and saying whether it did; it checks
    `fired` before starting one, and calls `finished()` as each ends; `watch()` runs beside.
    """

    def __init__(self, needed: int | None, grace_s: float = 0.0) -> None:
        self.needed = needed
        self.grace_s = grace_s
        self.fired = False
        self.cut = 0  # episodes this cutter ended
        self.enough_after_s: float | None = None  # how long the round took to reach `needed`
        self._started = time.monotonic()
        self._done = 0
        self._running: dict[object, Callable[[], bool]] = {}
        self._enough = asyncio.Event()
        if needed == 0:
            self._reached_enough()

    @classmethod
    def for_step(cls, settings: StepDeadline | None, total: int) -> "StepCutter":
        """The step deadline over a round of `total` episodes (None: one that never fires)."""
        if settings is None:
            return cls(None)
        return cls(max(1, math.ceil(settings.after_fraction * total)), settings.grace_s)

    @classmethod
    def after(cls, seconds: float) -> "StepCutter":
        """A round cut `seconds` after it starts, however many are done."""
        return cls(0, seconds)

    @contextlib.contextmanager
    def watching(self, cut: Callable[[], bool]) -> Iterator[None]:
        """While the body runs, firing calls `cut` (True: it ended the episode; False: something
        else had already, e.g. its own deadline, which is not the step's doing)."""
        key = object()
        self._running[key] = cut
        try:
            yield
        finally:
            del self._running[key]

    def cut_queued(self, cut: Callable[[], bool]) -> None:
        """Cut an episode that would only start after the cutter fired."""
        self.cut += int(cut())

    def finished(self) -> None:
        """One more episode of the round is done (whatever its outcome)."""
        self._done += 1
        if self.needed is not None and self._done >= self.needed:
            self._reached_enough()

    def _reached_enough(self) -> None:
        if not self._enough.is_set():
            self.enough_after_s = time.monotonic() - self._started
            self._enough.set()

    async def watch(self) -> None:
        """Run beside the round (cancel it when the round is over): fires when the time comes."""
        if self.needed is None:
            return
        await self._enough.wait()
        await asyncio.sleep(self.grace_s)
        self.fired = True
        for cut in list(self._running.values()):
            self.cut += int(cut())


def cut_by_step(traj: Trajectory) -> bool:
    """Whether the step deadline (or the refill round's bound) cut this episode: it has no
    outcome and never trains; "refill" replaces it."""
    return traj.error is not None and traj.grade.get("cut_by") == "step"


def refill_bound_s(settings: StepDeadline, cutter: StepCutter) -> float:
    """How long the refill round may run: `refill_s`, or as long as the step's round took to
    reach `after_fraction` (a typical episode under full load), at least `grace_s` (what the
    stragglers got; a round whose early episodes all broke at once says nothing)."""
    if settings.refill_s is not None:
        return settings.refill_s
    assert cutter.enough_after_s is not None, "the cutter fired, so its round reached after_fraction"
    return max(cutter.enough_after_s, settings.grace_s)


Job = TypeVar("Job")
# One job's outcome: a trajectory, or (an outside harness's episode) its segments, in order.
Played = Trajectory | list[Trajectory]
PlayRound = Callable[[Sequence[Job], StepCutter], Awaitable[Sequence[Played]]]


def _episodes(played: Sequence[Played]) -> list[list[Trajectory]]:
    return [list(p) if isinstance(p, list) else [p] for p in played]


async def play_step(jobs: Sequence[Job], settings: StepDeadline | None, play_round: PlayRound,
                    refill_of: Callable[[Job], Job]) -> list[Trajectory]:
    """A step's episodes under its step deadline, with the refill round where `partial_groups`
    is "refill" (see the module docstring). `play_round(jobs, cutter)` plays a round (per job,
    in order, a trajectory or a list of them: a harness episode's segments) with `cutter`
    beside it; `refill_of(job)` is the job that replaces a cut one (same task and group index,
    its own seed). Returns the trajectories in job order (a job's segments together), each
    refill right after the member it replaces."""
    cutter = StepCutter.for_step(settings, len(jobs))
    played = _episodes(await play_round(jobs, cutter))
    if cutter.fired:
        log.info("step deadline: %d of %d episodes cut", cutter.cut, len(jobs))
    lost = [k for k, episode in enumerate(played) if any(cut_by_step(t) for t in episode)]
    if settings is None or settings.partial_groups != "refill" or not cutter.fired or not lost:
        return [t for episode in played for t in episode]
    bound = refill_bound_s(settings, cutter)
    refills = _episodes(await play_round([refill_of(jobs[k]) for k in lost], StepCutter.after(bound)))
    for episode in refills:
        for traj in episode:
            traj.refill = True
    log.info("step deadline: %d cut episodes refilled within %.1fs, %d of the refills cut again",
             len(refills), bound, sum(any(cut_by_step(t) for t in episode) for episode in refills))
    replacing = dict(zip(lost, refills))
    merged: list[Trajectory] = []
    for k, episode in enumerate(played):
        merged.extend(episode)
        merged.extend(replacing.get(k, ()))
    return merged


def apply_partial_group_policy(
    groups: Sequence[Sequence[Trajectory]], group_size: int, policy: PartialGroupPolicy,
) -> tuple[list[list[Trajectory]], int]:
    """What each group of one task's episodes trains on, once members were lost (cut by a
    deadline or broken: `error` set, or text-mode, i.e. anything the trainer never trains).

    "keep": a group keeps its usable members if at least min(2, group_size) remain (one sample
    has no group baseline); "drop": a group that lost any member is dropped whole; "refill":
    the runner already replaced what the step cut (a cut member and its refill are both in
    the group, the cut one unusable), so what is left is judged as "keep" judges it. Returns
    the kept groups (usable members only, in order) and how many groups were dropped.
    """
    if policy not in ("keep", "drop", "refill"):
        raise ValueError(f"partial group policy must be 'keep', 'drop' or 'refill', not {policy!r}")
    needed = group_size if policy == "drop" else min(2, group_size)
    kept: list[list[Trajectory]] = []
    for group in groups:
        usable = [t for t in group if t.error is None and not t.text_mode]
        if len(usable) >= needed:
            kept.append(usable)
    return kept, len(groups) - len(kept)
