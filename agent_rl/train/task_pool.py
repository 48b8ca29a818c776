"""The adaptive task pool (`tasks.sampler: adaptive`): draw the tasks the policy is learning on.

A group teaches the policy something only when its outcomes differ: a task that is always
solved or never solved gives zero advantage (DAPO's dynamic sampling drops such groups after
paying for their rollouts). The pool keeps a running pass rate per task from the graded groups
it is shown (`observe`) and spends the draws on tasks whose rate lies in a band:

- pass rate: the fraction of the task's last `window` graded episodes that were solved (a
  reward >= `solved_reward`). A window rather than an exponential average: the rate is an exact
  count ("3 of the last 16"), forgets an older policy's outcomes at a known speed, and needs no
  initial value for unseen tasks.
- standing of a task, a pure function of its record (`standing`): unseen (no episode yet),
  judging (fewer than `min_attempts` episodes, or on its way to being retired or parked: its
  whole window solved, or nothing ever solved; it needs the draws that rule counts), in band,
  out of band, retired (the last `retire_after` episodes all solved), parked (`park_after`
  episodes, none solved).
- draws come in passes, like epochs: a pass queues every unseen, judging and in-band task (and
  each out-of-band task with `out_of_band_probability`, so its rate can move back), in a seeded
  shuffle or, with `curriculum: easy_first`, easiest first. A task retired or parked while
  queued is skipped. Independently, each draw is a revisit with `revisit_probability`: a
  uniformly chosen retired or parked task, whose next group decides whether it returns
  (a failure ends a retired task's streak; a solve unparks a parked one for good).

Randomness comes from one `random.Random` whose state is in `state_dict()` together with the
records and the current pass, so a pool loaded from a checkpoint draws exactly what the
uninterrupted one would. `take` reads the records but never changes them, which is what makes
`peek` (take, then put the RNG and the pass back) exact.

The pool holds no lock: it is used from the trainer's thread only. In `algorithm.mode: async`
the producer (train/async_rollouts.py) draws from it and shows it each group on that thread,
inside `take`, so a pool in a checkpoint agrees with the draws recorded as in flight.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Literal, Mapping, Protocol, Sequence, runtime_checkable

from pydantic import Field, model_validator

from agent_rl.train.sampler import DrawsTasks, TaskSampler
from strictconfig import StrictModel

if TYPE_CHECKING:
    from agent_rl.train.config import TasksConfig

__all__ = ["AdaptivePoolConfig", "AdaptiveTaskPool", "LearnsFromOutcomes", "TaskRecord", "episode_outcomes",
           "make_task_sampler", "pool_metrics", "standing"]

Standing = Literal["unseen", "judging", "in_band", "out_of_band", "retired", "parked"]
BENCHED: frozenset[str] = frozenset({"retired", "parked"})
# Curriculum prior for a task not judged yet, as a guessed failure rate (comparable with
# 1 - pass rate of judged tasks). Labels are envs.Task.difficulty; floor variants name the
# file, function and line, so they are the easiest.
DIFFICULTY_PRIOR: dict[str, float] = {"floor": 0.1, "easy": 0.3, "medium": 0.5, "hard": 0.7}
UNKNOWN_DIFFICULTY = -1.0  # neither judged nor labelled: first, to learn its rate early


class AdaptivePoolConfig(StrictModel):
    """`tasks.adaptive`: how the adaptive pool judges tasks by their running pass rate.

    Counts are graded episodes (a group of G adds G); broken episodes are not counted."""

    config_where: ClassVar[str] = "tasks.adaptive"

    band_low: float = Field(0.1, ge=0, le=1)
    """Lowest running pass rate of a task drawn every pass."""
    band_high: float = Field(0.9, ge=0, le=1)
    """Highest running pass rate of a task drawn every pass."""
    window: int = Field(16, ge=1)
    """The running pass rate is over the task's last `window` graded episodes."""
    min_attempts: int = Field(4, ge=1)
    """Episodes before a task's rate is judged against the band (until then it is drawn every pass)."""
    solved_reward: float = 1.0
    """An episode whose reward is at least this counts as solved (1.0: resolved, also under partial credit)."""
    retire_after: int = Field(16, ge=0)
    """Retire a task after this many consecutive solved episodes; 0: never retire."""
    park_after: int = Field(16, ge=0)
    """Park a task after this many episodes without a single solve; 0: never park."""
    revisit_probability: float = Field(0.05, ge=0, le=1)
    """Chance that a draw is a retired or parked task (chosen uniformly), to see whether it came back."""
    out_of_band_probability: float = Field(0.1, ge=0, le=1)
    """Chance that a judged task outside the band joins a pass, so its rate can move back into the band."""
    curriculum: Literal["none", "easy_first"] = "none"
    """Order within a pass. none: seeded shuffle. easy_first: by estimated difficulty (1 - pass rate once
    judged, else the task's difficulty label; tasks with neither first)."""
    seed: int | None = None
    """Seed of the pool's RNG; None: the run's seed."""

    @model_validator(mode="after")
    def _band_is_a_band(self) -> "AdaptivePoolConfig":
        if self.band_low > self.band_high:
            raise ValueError(f"band_low ({self.band_low}) must be <= band_high ({self.band_high})")
        return self


@dataclass(frozen=True)
class TaskRecord:
    """What the pool knows of one task: its graded episodes, oldest first."""

    attempts: int = 0
    """Graded episodes seen."""
    solved: int = 0
    """Of which solved."""
    streak: int = 0
    """Consecutive solved episodes ending with the latest."""
    recent: tuple[int, ...] = ()
    """The last `window` outcomes, 1 solved / 0 not."""


def record_outcomes(record: TaskRecord, solved: Sequence[bool], window: int) -> TaskRecord:
    """The record after these episodes, in order."""
    streak = record.streak
    for ok in solved:
        streak = streak + 1 if ok else 0
    return TaskRecord(
        attempts=record.attempts + len(solved),
        solved=record.solved + sum(solved),
        streak=streak,
        recent=(record.recent + tuple(int(ok) for ok in solved))[-window:],
    )


def pass_rate(record: TaskRecord) -> float | None:
    """Solved fraction of the recent window; None before any episode."""
    return sum(record.recent) / len(record.recent) if record.recent else None


def standing(record: TaskRecord, config: AdaptivePoolConfig) -> Standing:
    """Where a task stands. Benching is checked first: both rules are about counts, so they
    apply from the episode that meets them."""
    if record.attempts == 0:
        return "unseen"
    if config.park_after and record.solved == 0 and record.attempts >= config.park_after:
        return "parked"
    if config.retire_after and record.streak >= config.retire_after:
        return "retired"
    rate = pass_rate(record)
    assert rate is not None
    if record.attempts < config.min_attempts:
        return "judging"
    if config.band_low <= rate <= config.band_high:
        return "in_band"
    # Out of the band, but the retire or park rule has not counted enough episodes yet: keep
    # drawing it, else an always- or never-solved task would idle out of band, never decided.
    if (config.retire_after and rate == 1.0) or (config.park_after and record.solved == 0):
        return "judging"
    return "out_of_band"


def estimated_difficulty(record: TaskRecord, label: str, config: AdaptivePoolConfig) -> float:
    """Guessed failure rate for the curriculum: observed once judged, else the label's prior."""
    rate = pass_rate(record)
    if rate is not None and record.attempts >= config.min_attempts:
        return 1.0 - rate
    return DIFFICULTY_PRIOR.get(label, UNKNOWN_DIFFICULTY)


@runtime_checkable
class LearnsFromOutcomes(DrawsTasks, Protocol):
    """A task sampler that is shown each graded group and reports its pool's make-up."""

    def observe(self, task_id: str, outcomes: Sequence[float]) -> None: ...

    def make_up(self) -> dict[str, int]: ...


class AdaptiveTaskPool:
    """Draws tasks by their running pass rate (module docstring); `DrawsTasks` plus `observe`
    (a group's rewards, or resolved flags) and `make_up` (counts for the metrics)."""

    def __init__(self, task_ids: Sequence[str], config: AdaptivePoolConfig, *, seed: int = 0, shuffle: bool = True,
                 difficulty: Mapping[str, str] | None = None) -> None:
        if not task_ids:
            raise ValueError("the task set is empty: nothing to train on")
        self.task_ids = list(dict.fromkeys(task_ids))
        self.config = config
        self.seed = config.seed if config.seed is not None else seed
        self.shuffle = shuffle
        self.difficulty = {t: (difficulty or {}).get(t, "") for t in self.task_ids}
        self.records: dict[str, TaskRecord] = {t: TaskRecord() for t in self.task_ids}
        self.rng = random.Random(self.seed)
        self.queue: list[str] = []  # the current pass, not drawn yet

    # ------------------------------------------------------------------ learning
    def observe(self, task_id: str, outcomes: Sequence[float]) -> None:
        """One graded group of `task_id` (its usable episodes' rewards, or True/False for resolved)."""
        if task_id not in self.records:
            raise KeyError(f"observe: {task_id!r} is not in this pool's {len(self.task_ids)} tasks")
        values = [float(o) for o in outcomes]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"observe: {task_id!r} has a non-finite outcome in {values}")
        solved = [v >= self.config.solved_reward for v in values]
        self.records[task_id] = record_outcomes(self.records[task_id], solved, self.config.window)

    def standing(self, task_id: str) -> Standing:
        return standing(self.records[task_id], self.config)

    def make_up(self) -> dict[str, int]:
        """Counts for the metrics: active (neither retired nor parked; includes unseen and
        in_band), in_band, retired, parked, unseen."""
        counts = {"active": 0, "in_band": 0, "retired": 0, "parked": 0, "unseen": 0}
        for task in self.task_ids:
            where = self.standing(task)
            if where in BENCHED:
                counts[where] += 1
                continue
            counts["active"] += 1
            if where in ("in_band", "unseen"):
                counts[where] += 1
        return counts

    # ------------------------------------------------------------------ drawing
    def take(self, n: int) -> list[str]:
        """The next n draws; distinct while enough tasks are drawable (the trainer groups one
        round's episodes by task id)."""
        out: list[str] = []
        drawn: set[str] = set()
        for _ in range(n):
            task = self._draw(drawn)
            out.append(task)
            drawn.add(task)
        return out

    def peek(self, n: int) -> list[str]:
        """What the next `take(n)` will return, without drawing it (to warm sandboxes ahead)."""
        rng_state, queue = self.rng.getstate(), list(self.queue)
        try:
            return self.take(n)
        finally:
            self.rng.setstate(rng_state)
            self.queue = queue

    def _draw(self, drawn: set[str]) -> str:
        benched = [t for t in self.task_ids if self.standing(t) in BENCHED]
        fresh = [t for t in benched if t not in drawn]
        if len(benched) == len(self.task_ids):  # all retired or parked: training still needs tasks
            return self.rng.choice(fresh or benched)
        p = self.config.revisit_probability
        if fresh and p > 0 and self.rng.random() < p:
            return self.rng.choice(fresh)
        return self._next_in_pass(drawn)

    def _next_in_pass(self, drawn: set[str]) -> str:
        self.queue = [t for t in self.queue if self.standing(t) not in BENCHED]
        for refill in (False, True):
            if refill:
                self._start_pass()
            for i, task in enumerate(self.queue):
                if task not in drawn:
                    return self.queue.pop(i)
        return self.queue.pop(0)  # every active task is already in this take: repeat one

    def _start_pass(self) -> None:
        """Queue the next pass (tasks already queued keep their place)."""
        members: list[str] = []
        active: list[str] = []
        for task in self.task_ids:
            where = self.standing(task)
            if where in BENCHED:
                continue
            active.append(task)
            if where != "out_of_band" or self.rng.random() < self.config.out_of_band_probability:
                members.append(task)
        members = members or active  # only out-of-band tasks left, none picked: all of them
        if self.shuffle:
            self.rng.shuffle(members)
        if self.config.curriculum == "easy_first":  # a stable sort: ties keep the shuffled order
            members.sort(key=lambda t: estimated_difficulty(self.records[t], self.difficulty[t], self.config))
        queued = set(self.queue)
        self.queue += [t for t in members if t not in queued]

    # ------------------------------------------------------------------ resume
    def _tasks_digest(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.task_ids)).encode()).hexdigest()[:16]

    def state_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able): the RNG, the current pass and every observed task's record."""
        version, words, gauss = self.rng.getstate()
        return {
            "kind": "adaptive",
            "seed": self.seed,
            "num_tasks": len(self.task_ids),
            "tasks_digest": self._tasks_digest(),
            "rng": [version, list(words), gauss],
            "queue": list(self.queue),
            "records": {t: {"attempts": r.attempts, "solved": r.solved, "streak": r.streak, "recent": list(r.recent)}
                        for t, r in self.records.items() if r.attempts},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = state.get("kind", "epoch")
        if kind != "adaptive":
            raise ValueError(f"checkpoint's task sampler is {kind!r}, this run's is 'adaptive': resume with the "
                             "same tasks.sampler")
        if state.get("tasks_digest") != self._tasks_digest() or state.get("seed") != self.seed:
            raise ValueError(
                f"checkpoint's adaptive task pool ({state.get('num_tasks')} tasks, seed {state.get('seed')}) does not "
                f"match this run ({len(self.task_ids)} tasks, seed {self.seed}): resume with the same tasks and seed"
            )
        version, words, gauss = state["rng"]
        self.rng.setstate((version, tuple(words), gauss))
        self.queue = list(state["queue"])
        window = self.config.window  # a run resumed with a smaller window keeps the newest outcomes
        self.records = {t: TaskRecord() for t in self.task_ids}
        for task, r in state["records"].items():
            self.records[task] = TaskRecord(int(r["attempts"]), int(r["solved"]), int(r["streak"]),
                                            tuple(int(x) for x in r["recent"])[-window:])


def episode_outcomes(trajectories: Iterable[Any]) -> list[float]:
    """What a pool is shown of one task's group: the rewards of its graded episodes. A broken
    episode says nothing about the task; a harness episode split into segments is one outcome,
    its first segment stands for it. (Used by the sync trainer and the async producer alike.)"""
    return [t.reward for t in trajectories if t.error is None and t.segment == 0]


def make_task_sampler(tasks: "TasksConfig", task_ids: Sequence[str], *, seed: int,
                      difficulty: Mapping[str, str] | None = None) -> DrawsTasks:
    """The sampler `tasks.sampler` names over these task ids (difficulty: id -> envs.Task.difficulty)."""
    if tasks.sampler == "adaptive":
        return AdaptiveTaskPool(task_ids, tasks.adaptive, seed=seed, shuffle=tasks.shuffle, difficulty=difficulty)
    return TaskSampler(task_ids, seed=seed, shuffle=tasks.shuffle)


def pool_metrics(sampler: DrawsTasks | None) -> dict[str, int]:
    """The pool's make-up as step-metric columns (pool_active, ...); nothing for the epoch sampler."""
    if not isinstance(sampler, LearnsFromOutcomes):
        return {}
    return {f"pool_{name}": count for name, count in sampler.make_up().items()}
