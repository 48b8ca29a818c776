"""Asynchronous rollouts: the staleness bound, straggler drops, resume without loss or repeats,
and an episode that spans a weight update (real HFEngine, real weights).

The producer is driven by a simulated trainer (take, "update", bump the version, push). The
episode runner is a double where only the producer's bookkeeping is under test; the partial
rollout test plays a real episode loop against a real transformers engine whose weights are
replaced between the episode's two turns.
"""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from agent_rl.rollout.trajectory import Trajectory
from agent_rl.train.async_rollouts import AsyncRollouts, Draw, Group, may_start, staleness
from agent_rl.train.sampler import TaskSampler

TASKS = [f"t{i}" for i in range(6)]


def test_admission_rule_table():
    # η = 0: nothing starts while the trainer updates, and at most one step's groups ahead.
    assert may_start(0, 2, 0, updating=False) and may_start(1, 2, 0, updating=False)
    assert not may_start(2, 2, 0, updating=False)
    assert not may_start(0, 2, 0, updating=True)
    # η = 1: one more step's worth may run ahead, also during an update.
    assert may_start(0, 2, 1, updating=True) and may_start(1, 2, 1, updating=True)
    assert not may_start(2, 2, 1, updating=True)
    assert may_start(3, 2, 1, updating=False) and not may_start(4, 2, 1, updating=False)


def test_staleness_is_judged_by_the_oldest_token():
    traj = Trajectory(task_id="t", response_ids=[1, 2, 3, 4], loss_mask=[1, 0, 1, 1],
                      behaviour_logprobs=[-1.0, 0.0, -1.0, -1.0], token_versions=[3, -1, 4, 4], policy_version=3)
    assert traj.versions == [3, 4] and traj.oldest_version == 3
    assert staleness(5, Group(Draw(0, "t"), [traj], started_version=3)) == 2
    with pytest.raises(ValueError, match="token_versions"):
        Trajectory(task_id="t", response_ids=[1], loss_mask=[1], behaviour_logprobs=[0.0], token_versions=[1, 2])


class FakeRunner:
    """Plays each episode as a short sleep; the first attempt of tasks in `slow` takes
    `slow_s`. Records (task, version it started under)."""

    def __init__(self, slow: set[str] = frozenset(), slow_s: float = 0.0) -> None:
        self.slow, self.slow_s = set(slow), slow_s
        self.started: list[tuple[str, int]] = []
        self.seen: set[str] = set()

    async def aprepare(self, tasks, episodes_per_task=1) -> None:
        pass

    async def episode(self, task, engine, tokenizer, agent_config, *, seed, policy_version, group_index):
        self.started.append((task, policy_version))
        first = task not in self.seen
        self.seen.add(task)
        await asyncio.sleep(self.slow_s if task in self.slow and first else 0.01)
        return Trajectory(task_id=task, response_ids=[1, 2], loss_mask=[1, 1], behaviour_logprobs=[-0.5, -0.5],
                          token_versions=[policy_version] * 2, reward=float(group_index % 2),
                          policy_version=policy_version, group_index=group_index)


def _producer(runner, version, *, eta, sampler=None, replay=(), next_index=0, concurrency=8):
    return AsyncRollouts(runner=runner, engine=None, tokenizer=None, tasks={t: t for t in TASKS},
                         sampler=sampler or TaskSampler(TASKS, seed=0), agent_config=None, group_size=2,
                         groups_per_step=2, max_staleness=eta, concurrency=concurrency, seed=0,
                         version=lambda: version[0], replay=replay, next_index=next_index)


def _train(producer, version, steps, update_s=0.05):
    """A simulated trainer: take a step's groups, 'update', bump the version, push. Returns
    [(draw index, staleness, task)] of every group trained."""
    trained = []
    for _ in range(steps):
        groups = producer.take(2, timeout_s=30)
        trained += [(g.draw.index, staleness(version[0], g), g.draw.task_id) for g in groups]
        time.sleep(update_s)
        version[0] += 1
        producer.weights_pushed()
    return trained


@pytest.mark.parametrize("eta", [0, 1, 2])
def test_no_trained_group_exceeds_the_staleness_bound(eta):
    version = [0]
    runner = FakeRunner()
    producer = _producer(runner, version, eta=eta)
    producer.start()
    try:
        trained = _train(producer, version, steps=6)
    finally:
        producer.close()
    assert len(trained) == 12
    assert max(age for _, age, _ in trained) <= eta
    if eta == 0:
        assert {age for _, age, _ in trained} == {0}  # on-policy: the synchronous schedule
    else:
        # The producer ran ahead during updates: some groups were trained a version late.
        assert max(age for _, age, _ in trained) >= 1
    indices = [i for i, _, _ in trained]
    assert len(set(indices)) == len(indices)


def test_a_straggler_is_dropped_counted_and_its_task_played_again():
    # Draw 1 (task t1) takes 0.5 s on its first attempt while updates take 0.1 s: later draws
    # overtake it, and by the time it finishes the trainer is more than η = 1 versions on.
    version = [0]
    runner = FakeRunner(slow={"t1"}, slow_s=0.5)
    producer = _producer(runner, version, eta=1, sampler=TaskSampler(TASKS, seed=0, shuffle=False), concurrency=8)
    producer.start()
    try:
        trained = _train(producer, version, steps=12, update_s=0.1)
        stats = producer.take_stats()
    finally:
        producer.close()
    assert max(age for _, age, _ in trained) <= 1
    assert stats.stale_dropped >= 1 and stats.stale_dropped_episodes == 2 * stats.stale_dropped
    assert 1 in {i for i, _, _ in trained}  # draw 1 (task t1) was trained after all, on a replay
    played_t1 = [v for task, v in runner.started if task == "t1"]
    assert len(played_t1) >= 4  # 2 episodes of the stale attempt, 2 of the replay


class SerialRunner(FakeRunner):
    """Episodes run one after another, in the order they start: groups finish in draw order,
    and the trainer often waits in take() for the second group of its step."""

    def __init__(self) -> None:
        super().__init__()
        self._last: asyncio.Future | None = None

    async def episode(self, task, engine, tokenizer, agent_config, *, seed, policy_version, group_index):
        before, self._last = self._last, asyncio.get_running_loop().create_future()
        mine = self._last
        if before is not None:
            await before
        await asyncio.sleep(0.03)
        mine.set_result(None)
        return Trajectory(task_id=task, response_ids=[1, 2], loss_mask=[1, 1], behaviour_logprobs=[-0.5, -0.5],
                          token_versions=[policy_version] * 2, policy_version=policy_version, group_index=group_index)


@pytest.mark.parametrize("eta", [0, 1])
def test_groups_finishing_in_draw_order_are_never_stale(eta):
    # No straggler, so no group may go stale: a draw the producer starts while the trainer waits
    # in take() for the rest of its step must count the groups that take already has (before
    # that rule, η = 0 dropped about half the groups here and η = 1 a quarter).
    version = [0]
    producer = _producer(SerialRunner(), version, eta=eta)
    producer.start()
    try:
        trained = _train(producer, version, steps=10, update_s=0.01)
        stats = producer.take_stats()
    finally:
        producer.close()
    assert stats.stale_dropped == 0
    assert [i for i, _, _ in trained] == list(range(20))


def test_snapshot_and_replay_lose_and_repeat_nothing():
    """Kill after a checkpoint: the next run replays the draws started but not trained."""
    version = [0]
    sampler = TaskSampler(TASKS, seed=3)
    producer = _producer(FakeRunner(), version, eta=1, sampler=sampler)
    producer.start()
    try:
        before = _train(producer, version, steps=3)
        snap = producer.snapshot()  # the checkpoint, taken after step 3
        after_checkpoint = _train(producer, version, steps=1)  # trained, then lost with the process
    finally:
        producer.close()
    assert snap["pending"], "the producer had draws in flight at the checkpoint"
    assert {i for i, _, _ in after_checkpoint} <= {d[0] for d in snap["pending"]} | set(range(snap["next_index"]))

    resumed_sampler = TaskSampler(TASKS, seed=3)
    resumed_sampler.load_state_dict(snap["sampler"])
    version = [3]
    producer = _producer(FakeRunner(), version, eta=1, sampler=resumed_sampler,
                         replay=[Draw.from_list(d) for d in snap["pending"]], next_index=snap["next_index"])
    producer.start()
    try:
        resumed = _train(producer, version, steps=3)
    finally:
        producer.close()
    indices = [i for i, _, _ in before + resumed]
    assert len(set(indices)) == len(indices), "a draw was trained twice"
    assert sorted(indices) == list(range(len(indices))), "a draw was skipped"
    # And each draw is the task the uninterrupted sampler would have drawn at that position.
    reference = TaskSampler(TASKS, seed=3).take(len(indices))
    assert all(reference[i] == task for i, _, task in before + resumed)


def test_the_trainer_sees_a_producer_failure():
    class Broken(FakeRunner):
        async def episode(self, *args, **kwargs):
            raise OSError("docker went away")

    producer = _producer(Broken(), [0], eta=1)
    producer.start()
    try:
        with pytest.raises(RuntimeError, match="producer failed: docker went away"):
            producer.take(2, timeout_s=30)
    finally:
        producer.close()


# ---------------------------------------------------------------------- a real partial rollout


class GatedEnv:
    """Two turns; between them it waits for the test to swap the engine's weights."""

    def __init__(self, turn_done: threading.Event, go: threading.Event) -> None:
        self.turn_done, self.go = turn_done, go
        self.turns = 0

    async def areset(self, *, seed=None, options=None):
        self.turns = 0
        return "Fix the bug. Reply with one ```bash``` block.", {"task_id": "t0"}

    async def astep(self, action):
        self.turns += 1
        if self.turns == 1:
            self.turn_done.set()
            await asyncio.to_thread(self.go.wait, 60)
            return "exit code 0", 0.0, False, False, {}
        return "Submitted.", 1.0, True, False, {"grade": {"resolved": True}, "end_reason": "submitted", "patch": ""}

    async def afinish(self, reason):
        return "ended", 0.0, False, True, {"grade": {"resolved": False}, "end_reason": reason}

    async def aclose(self):
        pass


def _segments(traj):
    """(start, end) of each run of sampled tokens in response_ids."""
    out, start = [], None
    for i, m in enumerate(traj.loss_mask + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


def test_an_episode_spanning_a_weight_update_carries_both_versions_and_their_logprobs():
    from agent_rl.engines.hf import HFEngine
    from agent_rl.engines.models import load_tokenizer, tiny_random_model
    from agent_rl.rollout.agent import AgentConfig
    from agent_rl.rollout.runner import EpisodeRunner

    tokenizer = load_tokenizer("smollm2-135m")
    old = tiny_random_model({"vocab_size": len(tokenizer)}, model_type="llama", seed=0)
    new = tiny_random_model({"vocab_size": len(tokenizer)}, model_type="llama", seed=1)
    engine = HFEngine(tiny_random_model({"vocab_size": len(tokenizer)}, model_type="llama", seed=0), tokenizer)
    turn_done, go = threading.Event(), threading.Event()
    runner = EpisodeRunner(concurrency=1, env_factory=lambda: GatedEnv(turn_done, go))
    version = [0]
    producer = AsyncRollouts(
        runner=runner, engine=engine, tokenizer=tokenizer, tasks={"t0": "t0"}, sampler=TaskSampler(["t0"]),
        agent_config=AgentConfig(max_turns=2, max_tokens_per_turn=6, verify_rerender=False),
        group_size=1, groups_per_step=1, max_staleness=1, concurrency=1, seed=0, version=lambda: version[0])
    producer.start()
    try:
        assert turn_done.wait(120), "the first turn never finished"
        engine.load_state_dict(new.state_dict(), version=1)  # what the trainer's weight push does
        version[0] = 1
        go.set()
        (group,) = producer.take(1, timeout_s=120)
    finally:
        producer.close()
        runner.close()
        engine.close_sync()
    traj = group.trajectories[0]
    assert traj.error is None, traj.error
    assert traj.versions == [0, 1] and group.oldest_version == 0
    (a, b), (c, d) = _segments(traj)[:2]
    assert set(traj.token_versions[a:b]) == {0} and set(traj.token_versions[c:d]) == {1}
    assert all(v == -1 for v, m in zip(traj.token_versions, traj.loss_mask) if not m)
    # Each turn's behaviour logprobs are those of the weights that sampled it.
    ids = traj.prompt_ids + traj.response_ids
    n = len(traj.prompt_ids)
    for model, (lo, hi) in ((old, (a, b)), (new, (c, d))):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[: n + hi]])).logits[0].float()
        expected = torch.log_softmax(logits[n + lo - 1 : n + hi - 1], dim=-1)
        expected = expected.gather(1, torch.tensor(ids[n + lo : n + hi])[:, None])[:, 0]
        assert torch.allclose(torch.tensor(traj.behaviour_logprobs[lo:hi]), expected, atol=1e-4)
    # And the other model does not explain the second turn (the check has teeth).
    with torch.no_grad():
        logits = old(input_ids=torch.tensor([ids[: n + d]])).logits[0].float()
    wrong = torch.log_softmax(logits[n + c - 1 : n + d - 1], dim=-1).gather(1, torch.tensor(ids[n + c : n + d])[:, None])[:, 0]
    assert not torch.allclose(torch.tensor(traj.behaviour_logprobs[c:d]), wrong, atol=1e-3)
