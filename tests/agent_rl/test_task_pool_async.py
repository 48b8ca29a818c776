"""The adaptive task pool under `algorithm.mode: async`: the real producer thread
(train/async_rollouts.py) with scripted episodes, no model, no Docker.

What is checked: the pool is drawn from and shown groups on the trainer's thread only, never
concurrently (even with snapshots taken from another thread); every snapshot is a consistent
cut (each draw is either shown to the pool or pending, never both); a resumed producer makes
exactly the draws of the uninterrupted run given the same groups; no task is drawn while it is
retired or parked. The last test runs the real Trainer (tiny random model) in async mode with
the pool: its metrics columns every step, and a resume from a checkpoint with draws in flight.
"""
from __future__ import annotations

import asyncio
import random
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

from agent_rl.rollout.trajectory import Trajectory
from agent_rl.train.async_rollouts import AsyncRollouts, Draw, staleness
from agent_rl.train.task_pool import BENCHED, AdaptivePoolConfig, AdaptiveTaskPool

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "smoke-cpu.yaml"
GROUP, PER_STEP = 2, 2
# Solve probabilities: always solved, never solved, and "mid" tasks whose groups are one solve
# and one failure (a running pass rate of exactly 0.5: in the band, never a streak to retire).
TRUE_P = {**{f"always-{i}": 1.0 for i in range(3)}, **{f"never-{i}": 0.0 for i in range(3)},
          **{f"mid-{i}": 0.5 for i in range(4)}}
TASKS = sorted(TRUE_P)
POOL = AdaptivePoolConfig(window=4, min_attempts=2, retire_after=4, park_after=4, revisit_probability=0.0,
                          out_of_band_probability=0.3)


def scripted_reward(p: float, seed: int, group_index: int) -> float:
    """An episode's outcome, a pure function of the task's solve probability, its seed (from the
    draw's index and attempt) and its place in the group: two runs that play the same draws see
    the same results."""
    if p == 0.5:
        return float(group_index % 2)
    return float(random.Random(seed).random() < p)


class InOrderRunner:
    """Episodes finish in the order they start (each waits for its predecessor), so groups
    reach the buffer in draw order and the trainer takes the same groups whatever the timing."""

    def __init__(self, probs: dict[str, float] = TRUE_P) -> None:
        self.probs = probs
        self._last: asyncio.Future | None = None

    async def aprepare(self, tasks, episodes_per_task=1) -> None:
        pass

    async def episode(self, task, engine, tokenizer, agent_config, *, seed, policy_version, group_index):
        before, self._last = self._last, asyncio.get_running_loop().create_future()
        mine = self._last
        await asyncio.sleep(0.002)
        if before is not None:
            await before
        await asyncio.sleep(0.002)  # the previous group's bookkeeping runs first
        mine.set_result(None)
        return self.trajectory(task, seed, policy_version, group_index)

    def trajectory(self, task: str, seed: int, policy_version: int, group_index: int) -> Trajectory:
        return Trajectory(task_id=task, prompt_ids=[1, 2, 3], response_ids=[4, 5], loss_mask=[1, 1],
                          behaviour_logprobs=[-0.5, -0.5], token_versions=[policy_version] * 2, num_turns=1,
                          reward=scripted_reward(self.probs[task], seed, group_index),
                          policy_version=policy_version, group_index=group_index)


class JitteryRunner(InOrderRunner):
    """Episodes of random length; one seed in five is a straggler, so some groups go stale."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.rng = random.Random(seed)

    async def episode(self, task, engine, tokenizer, agent_config, *, seed, policy_version, group_index):
        await asyncio.sleep(0.3 if zlib.crc32(str(seed).encode()) % 5 == 0 else self.rng.uniform(0.0, 0.02))
        return self.trajectory(task, seed, policy_version, group_index)


class WatchedPool(AdaptiveTaskPool):
    """The pool, recording who calls it: any overlapping call is a race, draws and shows from
    another thread than the trainer's are a design breach, a draw of a benched task a bug."""

    def __init__(self, *args, trainer_thread: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trainer_thread = trainer_thread
        self._inside = threading.Lock()
        self.races: list[str] = []
        self.foreign: list[str] = []
        self.drew_benched: list[str] = []
        self.draws: list[str] = []
        self.benched_at: dict[str, int] = {}  # task -> number of draws made when it was benched
        self.shown_benched: Counter[str] = Counter()  # groups of a task shown after it was benched

    def _enter(self, name: str, trainer_only: bool) -> bool:
        if trainer_only and threading.get_ident() != self.trainer_thread:
            self.foreign.append(name)
        entered = self._inside.acquire(blocking=False)
        if not entered:
            self.races.append(name)
        return entered

    def take(self, n):
        entered = self._enter("take", trainer_only=True)
        try:
            out = super().take(n)
            self.drew_benched += [t for t in out if t in self.benched_at]
            self.draws += out
            return out
        finally:
            if entered:
                self._inside.release()

    def observe(self, task_id, outcomes):
        entered = self._enter("observe", trainer_only=True)
        try:
            if task_id in self.benched_at:
                self.shown_benched[task_id] += 1
            super().observe(task_id, outcomes)
            if self.standing(task_id) in BENCHED:
                self.benched_at.setdefault(task_id, len(self.draws))
            else:
                self.benched_at.pop(task_id, None)
        finally:
            if entered:
                self._inside.release()

    def state_dict(self):
        entered = self._enter("state_dict", trainer_only=False)
        try:
            return super().state_dict()
        finally:
            if entered:
                self._inside.release()


def _producer(runner, version, pool, *, eta=1, replay=(), next_index=0, concurrency=8):
    return AsyncRollouts(runner=runner, engine=None, tokenizer=None, tasks={t: t for t in TASKS}, sampler=pool,
                         agent_config=None, group_size=GROUP, groups_per_step=PER_STEP, max_staleness=eta,
                         concurrency=concurrency, seed=0, version=lambda: version[0], replay=replay,
                         next_index=next_index)


def _train(producer, version, steps, update_s=0.02, on_step=None):
    """A simulated trainer: take a step's groups, 'update', bump the version, push. Returns the
    groups trained, step by step, as (draw index, task, attempt, rewards)."""
    trained = []
    for _ in range(steps):
        groups = producer.take(PER_STEP, timeout_s=60)
        assert all(staleness(version[0], g) <= producer.max_staleness for g in groups)
        trained.append([(g.draw.index, g.draw.task_id, g.draw.attempt, [t.reward for t in g.trajectories])
                        for g in groups])
        time.sleep(update_s)
        version[0] += 1
        producer.weights_pushed()
        if on_step is not None:
            on_step(trained)
    return trained


def _fresh_pool(**kwargs) -> WatchedPool:
    return WatchedPool(TASKS, POOL, seed=5, trainer_thread=threading.get_ident(), **kwargs)


def test_the_pool_is_only_touched_on_the_trainer_thread_and_every_snapshot_is_a_consistent_cut():
    version, pool = [0], _fresh_pool()
    producer = _producer(JitteryRunner(), version, pool, eta=1)
    stop = threading.Event()

    def hammer() -> None:  # a checkpoint from another thread must not race the trainer's takes
        while not stop.is_set():
            producer.snapshot()
            time.sleep(0.001)

    cuts = []

    def check_cut(trained) -> None:
        snap = producer.snapshot()
        taken = {i for step in trained for i, *_ in step}
        pending = {d[0] for d in snap["pending"]}
        cuts.append((taken, pending, snap["next_index"]))

    hammering = threading.Thread(target=hammer)
    producer.start()
    hammering.start()
    try:
        trained = _train(producer, version, steps=25, update_s=0.05, on_step=check_cut)
        stats = producer.take_stats()
    finally:
        stop.set()
        hammering.join()
        producer.close()
    assert not pool.races and not pool.foreign
    assert stats.stale_dropped >= 1, "the stragglers should have made some groups stale"
    for taken, pending, next_index in cuts:
        assert not taken & pending, "a draw both trained (shown to the pool) and pending"
        assert taken | pending == set(range(next_index)), "a draw neither trained nor pending"
    # Every group handed over was shown once, stale-dropped ones included (a decision: they are
    # real outcomes), and nothing else was.
    groups_shown = sum(map(len, trained)) + stats.stale_dropped
    assert sum(r.attempts for r in pool.records.values()) == GROUP * groups_shown


def test_a_resumed_producer_makes_the_draws_of_the_uninterrupted_run():
    """Checkpoint after step 4 with draws in flight; the resumed run, given the same groups,
    trains and draws exactly what the uninterrupted one did, and ends with the same pool."""
    version, pool = [0], _fresh_pool()
    producer = _producer(InOrderRunner(), version, pool)
    producer.start()
    try:
        before = _train(producer, version, steps=4)
        snap = producer.snapshot()
        after = _train(producer, version, steps=8)
        straight_state, straight_stats = pool.state_dict(), producer.take_stats()
    finally:
        producer.close()
    assert snap["pending"], "the checkpoint had draws in flight"
    assert snap["sampler"]["records"], "the pool had learned something by the checkpoint"
    assert straight_stats.stale_dropped == 0  # groups arrive in draw order: none can go stale
    assert straight_state["records"] != snap["sampler"]["records"], "the pool learned after the checkpoint"
    assert pool.make_up()["retired"] + pool.make_up()["parked"] > 0, "some task was benched"

    def resume(loaded: bool) -> tuple[list, dict]:
        again = _fresh_pool()
        if loaded:
            again.load_state_dict(snap["sampler"])
        version = [4]
        producer = _producer(InOrderRunner(), version, again, replay=[Draw.from_list(d) for d in snap["pending"]],
                             next_index=snap["next_index"])
        producer.start()
        try:
            return _train(producer, version, steps=8), again.state_dict()
        finally:
            producer.close()

    resumed, resumed_state = resume(loaded=True)
    assert resumed == after
    assert resumed_state == straight_state
    # The teeth: the same pending draws with a pool that forgot its state draw otherwise.
    assert resume(loaded=False)[0] != after
    indices = [i for step in before + after for i, *_ in step]
    assert len(indices) == len(set(indices)) and sorted(indices) == list(range(len(indices)))


def test_no_task_is_drawn_while_benched_and_benched_tasks_leave_the_stream():
    version, pool = [0], _fresh_pool()
    producer = _producer(JitteryRunner(seed=1), version, pool, eta=2)
    producer.start()
    try:
        trained = _train(producer, version, steps=40, update_s=0.01)
        stale = producer.take_stats().stale_dropped
    finally:
        producer.close()
    assert not pool.drew_benched, pool.drew_benched
    assert pool.make_up() == {"active": 4, "in_band": 4, "retired": 3, "parked": 3, "unseen": 0}
    assert set(pool.benched_at) == {t for t in TASKS if not t.startswith("mid")}
    # A benched task is still played for the draws made before it was benched (at most the
    # T = (η + 1)·B pending when it was; a stale drop shows one twice), then never again.
    ahead = (producer.max_staleness + 1) * PER_STEP
    assert all(n <= ahead + stale for n in pool.shown_benched.values()), pool.shown_benched
    later = Counter(t for step in trained[-10:] for _, t, *_ in step)
    assert set(later) <= {t for t in TASKS if t.startswith("mid")}, later


# ---------------------------------------------------------------------- the real Trainer


class AsyncScriptedRunner(InOrderRunner):
    """The EpisodeRunner's async surface (aprepare, episode, close) with scripted outcomes."""

    async def episode(self, task, engine, tokenizer, agent_config, *, seed, policy_version, group_index):
        return await super().episode(task.instance_id, engine, tokenizer, agent_config, seed=seed,
                                     policy_version=policy_version, group_index=group_index)

    def close(self) -> None:
        pass


def test_async_trainer_logs_the_pool_every_step_and_resumes_it_with_the_draws_in_flight(tiny_dir, tmp_path):
    from agent_rl.train.checkpoint import CheckpointManager
    from agent_rl.train.config import load_train_config
    from agent_rl.train.trainer import Trainer

    probs = {"datekit-001": 1.0, "datekit-002": 0.0, "semvertools-001": 0.5}
    ids = sorted(probs)
    overrides = [f"model.name={tiny_dir}", f"output_dir={tmp_path}", "max_steps=6", "checkpoint.every=1",
                 "checkpoint.keep_last=6", f"tasks.ids=[{','.join(ids)}]", "tasks.sampler=adaptive",
                 "tasks.adaptive.min_attempts=2", "tasks.adaptive.retire_after=2", "tasks.adaptive.park_after=2",
                 "tasks.adaptive.window=4",
                 "tasks.adaptive.revisit_probability=0.0", "algorithm.mode=async", "algorithm.max_staleness=1",
                 "rollout.tasks_per_step=1", "algorithm.mini_batch_size=2", "algorithm.kl_beta=0.0",
                 "weight_sync.verify=false", "logging.tensorboard=false", "logging.progress=false"]
    config = load_train_config(RECIPE, overrides)
    with Trainer(config) as trainer:
        trainer.runner = AsyncScriptedRunner(probs)
        rows = [trainer.train_step() for _ in range(6)]
    for row in rows:
        assert {"pool_active", "pool_in_band", "pool_retired", "pool_parked", "pool_unseen"} <= set(row)
        assert row["pool_active"] + row["pool_retired"] + row["pool_parked"] == 3
    assert rows[-1]["pool_unseen"] == 0 and rows[-1]["pool_retired"] + rows[-1]["pool_parked"] >= 1

    saved = CheckpointManager(tmp_path / "checkpoints").load(tmp_path / "checkpoints" / "step-000002")
    assert saved.state["async"]["pending"], "the checkpoint had draws in flight"
    assert saved.state["sampler"]["kind"] == "adaptive" and saved.state["sampler"]["records"]
    with Trainer(config, resume=tmp_path / "checkpoints" / "step-000002") as resumed:
        resumed.runner = AsyncScriptedRunner(probs)
        again = [resumed.train_step() for _ in range(4)]
    assert len(again) == len(rows[2:])
    for old, new in zip(rows[2:], again):
        assert new["draws"] == old["draws"] and new["task_ids"] == old["task_ids"]
        assert {k: v for k, v in new.items() if k.startswith("pool_")} == {k: v for k, v in old.items()
                                                                          if k.startswith("pool_")}
