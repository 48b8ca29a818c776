"""Deadlines: one clock per episode, a cut-off per step, and what a cut group trains on.

An episode's `Deadline` covers everything it does (environment and sandbox start, every turn,
grading, teardown). The agent loop reads it before each turn and stops early enough to grade
what it has; anything that still runs past it (a command that ignores its own timeout, a
stalled grader) is cut by an `asyncio.timeout` around each phase (`Deadline.scope`). The step
deadline (`StepDeadline`) brings the deadlines of late episodes forward to now, so they are cut
the same way. `apply_partial_group_policy` decides what a group that lost members trains on.

Blocking work (Docker calls in threads) cannot be cancelled: a cut abandons the thread and the
runner closes the episode's environment, which destroys its container and so unblocks it.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import AsyncIterator, ClassVar, Literal, Sequence

from pydantic import Field

from agent_rl.rollout.trajectory import Trajectory
from strictconfig import StrictModel

DeadlinePolicy = Literal["truncate", "drop"]
PartialGroupPolicy = Literal["keep", "drop"]
CutBy = Literal["", "episode", "step"]


class StepDeadline(StrictModel):
    """Cut the stragglers of a rollout step instead of letting one slow sandbox hold the batch."""

    config_where: ClassVar[str] = "rollout.step_deadline"

    after_fraction: float = Field(0.9, gt=0, le=1)
    """Once this fraction of the step's episodes has finished, the grace period starts (1.0: only when all have, i.e. never cut)."""
    grace_s: float = Field(30.0, ge=0)
    """Seconds the remaining episodes get after that; then they are cut (never trained on: they have no outcome)."""
    partial_groups: PartialGroupPolicy = "keep"
    """A group that lost members: "keep" trains on those left if at least two remain, "drop" drops the whole group."""


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

    def cut(self, by: CutBy = "step") -> None:
        """End the episode now: open scopes fire, later ones expire at once, no new turn starts."""
        if self.cut_by:
            return
        self.cut_by = by
        now = time.monotonic()
        self.at = now if self.at is None else min(self.at, now)
        for timeout in list(self._scopes):
            timeout.reschedule(asyncio.get_running_loop().time())


def apply_partial_group_policy(
    groups: Sequence[Sequence[Trajectory]], group_size: int, policy: PartialGroupPolicy,
) -> tuple[list[list[Trajectory]], int]:
    """What each group of one task's episodes trains on, once members were lost (cut by a
    deadline or broken: `error` set, or text-mode, i.e. anything the trainer never trains).

    "keep": a group keeps its usable members if at least min(2, group_size) remain (one sample
    has no group baseline); "drop": a group that lost any member is dropped whole. Returns the
    kept groups (usable members only, in order) and how many groups were dropped.
    """
    if policy not in ("keep", "drop"):
        raise ValueError(f"partial group policy must be 'keep' or 'drop', not {policy!r}")
    needed = group_size if policy == "drop" else min(2, group_size)
    kept: list[list[Trajectory]] = []
    for group in groups:
        usable = [t for t in group if t.error is None and not t.text_mode]
        if len(usable) >= needed:
            kept.append(usable)
    return kept, len(groups) - len(kept)
