"""Episode and step deadlines: hung episodes are cut, the batch still completes.

Unit tests drive the real `EpisodeRunner` with test doubles (test_agent's scripted engine and
env, made to hang where a real sandbox or grader would); the Docker tests at the end hang a
real sandbox command and a real grader and check that the deadline cuts both in bounded time
while the batch's other episode is graded as usual, and that the step deadline's refill round
replaces a hung episode with a real one that is graded. (The step deadline on Ray workers is
tested on a real cluster in test_ray_rollouts.py.)
"""
from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from test_agent import ScriptedEngine, ScriptedEnv, sampled_segments

from agent_rl.rollout.agent import AgentConfig, run_episode
from agent_rl.rollout.deadlines import Deadline, StepDeadline, apply_partial_group_policy
from agent_rl.rollout.runner import EpisodeRunner, RolloutConfig, summarize
from agent_rl.rollout.trajectory import Trajectory
from sandboxes.executor import run_blocking
from strictconfig import ConfigError

LS, HANG, SUBMIT = "```bash\nls\n```", "```bash\nhang\n```", "```bash\nsubmit\n```"


@pytest.fixture(scope="module")
def tokenizer():
    from agent_rl.engines.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


async def forever() -> None:
    await asyncio.Event().wait()


class StallingEnv(ScriptedEnv):
    """ScriptedEnv that never answers a `hang` action, or (stall_grading) never finishes grading."""

    def __init__(self, *, stall_grading: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.stall_grading = stall_grading

    async def astep(self, action: str):
        if "hang" in action:
            self.actions.append(action)
            await forever()
        return await super().astep(action)

    async def afinish(self, reason: str):
        if self.stall_grading:
            await forever()
        return await super().afinish(reason)


class BlockedThreadEnv(ScriptedEnv):
    """A `hang` blocks a worker thread, as a Docker exec does; only closing the env (destroying
    the container) frees it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.container_gone = threading.Event()
        self.thread_freed = threading.Event()

    def _exec_until_container_dies(self) -> None:
        self.container_gone.wait(60)
        self.thread_freed.set()

    async def astep(self, action: str):
        if "hang" in action:
            await run_blocking(self._exec_until_container_dies)
        return await super().astep(action)

    def close(self) -> None:
        self.closed = True
        self.container_gone.set()


class StallingEngine(ScriptedEngine):
    """ScriptedEngine whose `stall_on_call`-th generation never returns (a stuck server)."""

    def __init__(self, *args, stall_on_call: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.stall_on_call = stall_on_call

    async def generate(self, prompt_ids, sampling):
        if len(self.calls) + 1 == self.stall_on_call:
            self.calls.append((list(prompt_ids), sampling))
            await forever()
        return await super().generate(prompt_ids, sampling)


def runner_with(env, **rollout) -> EpisodeRunner:
    return EpisodeRunner(env_factory=lambda: env, concurrency=1, rollout=rollout)


async def play(runner: EpisodeRunner, engine, tokenizer, **agent) -> Trajectory:
    return await runner.episode("t", engine, tokenizer, AgentConfig.from_config(agent or {"max_turns": 5}))


# ---------------------------------------------------------------------- the episode deadline


async def test_hung_step_is_cut_and_kept_truncated_with_every_sampled_token(tokenizer):
    env, engine = StallingEnv(), ScriptedEngine(tokenizer, [LS, HANG])
    runner = runner_with(env, episode_deadline_s=0.5, deadline_reserve_s=0.0)
    started = time.monotonic()
    traj = await play(runner, engine, tokenizer)
    assert time.monotonic() - started < 2.0
    assert (traj.finish_reason, traj.truncated, traj.terminated, traj.reward) == ("deadline", True, False, 0.0)
    assert traj.error is None and traj.trainable
    assert traj.grade == {"deadline": True, "cut_by": "episode", "phase": "step", "resolved": False}
    assert traj.timings["deadline_s"] == 0.5
    # Both replies were sampled (the second's step hung): the trajectory holds both, token-exact.
    assert traj.num_turns == 2 and sampled_segments(traj) == engine.outputs
    assert len(traj.token_versions) == len(traj.response_ids)
    # One timing record per reply; the hung step's counts up to the cut.
    assert len(traj.turn_timings) == 2 and traj.turn_timings[1]["env_s"] > 0.1
    rendered = tokenizer.apply_chat_template(traj.messages, tokenize=True)
    assert list(rendered) == traj.prompt_ids + traj.response_ids
    await runner.aclose()
    assert env.closed  # a cut env is never reused
    assert (summarize([traj])["deadline_cuts"], summarize([traj])["deadline_episodes"]) == (1, 1)


async def test_drop_policy_makes_the_cut_episode_an_error(tokenizer):
    env = StallingEnv()
    async with runner_with(env, episode_deadline_s=0.3, deadline_policy="drop") as runner:
        traj = await play(runner, ScriptedEngine(tokenizer, [HANG]), tokenizer)
    assert traj.finish_reason == "deadline" and traj.error.startswith("deadline: cut after 0.3s during step")
    assert not traj.trainable and env.closed


async def test_stalled_grader_is_cut(tokenizer):
    env = StallingEnv(stall_grading=True)
    async with runner_with(env, episode_deadline_s=0.5, deadline_reserve_s=0.0) as runner:
        traj = await play(runner, ScriptedEngine(tokenizer, [LS]), tokenizer, max_turns=1)
    assert traj.finish_reason == "deadline" and traj.grade["phase"] == "grading" and traj.num_turns == 1
    assert traj.trainable and env.closed


async def test_cut_mid_generation_leaves_no_half_turn(tokenizer):
    engine = StallingEngine(tokenizer, [LS], stall_on_call=2)
    async with runner_with(StallingEnv(), episode_deadline_s=0.5, deadline_reserve_s=0.0) as runner:
        traj = await play(runner, engine, tokenizer)
    assert traj.finish_reason == "deadline" and traj.grade["phase"] == "generate"
    assert traj.num_turns == 1 and sampled_segments(traj) == engine.outputs
    assert len(traj.turn_timings) == 1  # the reply lost whole has no record either
    assert [m["role"] for m in traj.messages][-2:] == ["assistant", "user"]  # the observation, no reply yet
    rendered = tokenizer.apply_chat_template(traj.messages, tokenize=True, add_generation_prompt=True)
    assert list(rendered) == traj.prompt_ids + traj.response_ids


async def test_closing_a_cut_env_frees_the_blocked_thread(tokenizer):
    env = BlockedThreadEnv()
    runner = runner_with(env, episode_deadline_s=0.3)
    started = time.monotonic()
    traj = await play(runner, ScriptedEngine(tokenizer, [HANG]), tokenizer)
    assert traj.finish_reason == "deadline" and time.monotonic() - started < 2.0
    assert await run_blocking(env.thread_freed.wait, 5)  # closed in the background: the "exec" returned
    await runner.aclose()


async def test_soft_deadline_stops_before_a_turn_and_grades(tokenizer):
    class SlowEnv(ScriptedEnv):
        async def astep(self, action):
            await asyncio.sleep(0.2)
            return await super().astep(action)

    env = SlowEnv()
    async with runner_with(env, episode_deadline_s=1.0, deadline_reserve_s=0.3) as runner:
        traj = await play(runner, ScriptedEngine(tokenizer, [LS]), tokenizer, max_turns=50)
        assert runner._idle == [env] and not env.closed  # it ended cleanly: the env goes back for reuse
    # Each turn takes ~0.2 s: the agent stops once another one would eat into the 0.3 s reserve.
    assert traj.finish_reason == "deadline" and env.finished == ["deadline"]
    assert traj.grade == {"resolved": False} and traj.error is None  # graded by the env, as usual
    assert 1 <= traj.num_turns <= 4 and traj.timings["deadline_s"] == 1.0
    assert (summarize([traj])["deadline_cuts"], summarize([traj])["deadline_episodes"]) == (0, 1)


async def test_env_creation_past_the_deadline(tokenizer):
    made: list[ScriptedEnv] = []

    def slow_factory():
        time.sleep(0.6)  # building an image, starting a container...
        made.append(ScriptedEnv())
        return made[-1]

    runner = EpisodeRunner(env_factory=slow_factory, rollout={"episode_deadline_s": 0.2})
    traj = await play(runner, ScriptedEngine(tokenizer, [SUBMIT]), tokenizer)
    assert traj.finish_reason == "deadline" and traj.grade["phase"] == "start"
    assert traj.error.endswith("before the first reply") and not traj.trainable  # never a phantom group member
    await runner.aclose()
    await asyncio.sleep(0.8)  # the env that arrived late was closed, not leaked
    assert len(made) == 1 and made[0].closed


async def test_hang_before_the_first_observation(tokenizer):
    class HangingReset(ScriptedEnv):
        async def areset(self, *, seed=None, options=None):
            await forever()

    traj = await run_episode(HangingReset(), ScriptedEngine(tokenizer, [SUBMIT]), tokenizer, AgentConfig(),
                             task="t", deadline=Deadline.after(0.2))
    assert (traj.finish_reason, traj.grade["phase"], traj.response_ids, traj.error) == ("deadline", "reset", [], None)
    assert traj.timings["deadline_s"] == 0.2 and not traj.trainable


async def test_no_deadline_changes_nothing(tokenizer):
    async with runner_with(ScriptedEnv()) as runner:
        traj = await play(runner, ScriptedEngine(tokenizer, [LS, SUBMIT]), tokenizer)
    assert traj.finish_reason == "submitted" and "deadline_s" not in traj.timings


# ---------------------------------------------------------------------- the step deadline


def stragglers(hanging: set[tuple[str, int]], *, step_s: float = 0.0):
    """An env factory whose n-th episode of task t hangs when (t, n) is in `hanging`, and whose
    steps take `step_s`; the factory's `seeds` lists (task, episode seed) in reset order."""
    seen: dict[str, int] = {}
    envs: list[ScriptedEnv] = []
    seeds: list[tuple[str, int | None]] = []

    class Env(StallingEnv):
        async def areset(self, *, seed=None, options=None):
            obs, info = await super().areset(seed=seed, options=options)
            seeds.append((self.task, seed))
            n = seen.setdefault(self.task, 0)
            seen[self.task] += 1
            if (self.task, n) in hanging:
                await forever()
            return obs, info

        async def astep(self, action: str):
            await asyncio.sleep(step_s)
            return await super().astep(action)

    def factory():
        envs.append(Env())
        return envs[-1]

    factory.seeds = seeds
    return factory, envs


async def test_step_deadline_cuts_the_straggler_and_the_rest_finish(tokenizer):
    factory, envs = stragglers({("b", 0)})
    rollout = {"step_deadline": {"after_fraction": 0.8, "grace_s": 0.3}}
    started = time.monotonic()
    async with EpisodeRunner(env_factory=factory, concurrency=6, rollout=rollout) as runner:
        trajs = await runner.collect(["a", "b"], ScriptedEngine(tokenizer, [LS, SUBMIT]), tokenizer, group_size=3,
                                     agent_config={"max_turns": 4}, progress=False)
    assert time.monotonic() - started < 3.0
    cut = [t for t in trajs if t.finish_reason == "deadline"]
    assert len(cut) == 1 and cut[0].task_id == "b" and cut[0].error.startswith("step_deadline: ")
    assert cut[0].grade["cut_by"] == "step" and not cut[0].trainable
    assert all(t.finish_reason == "submitted" and t.error is None for t in trajs if t is not cut[0])
    assert summarize(trajs)["deadline_cuts"] == 1
    assert all(env.closed for env in envs if env.task == "b" and env.turns == 0)

    groups = [[t for t in trajs if t.task_id == task] for task in ("a", "b")]
    kept, dropped = apply_partial_group_policy(groups, 3, "keep")
    assert [len(g) for g in kept] == [3, 2] and dropped == 0
    kept, dropped = apply_partial_group_policy(groups, 3, "drop")
    assert [g[0].task_id for g in kept] == ["a"] and dropped == 1


async def test_step_deadline_also_cuts_episodes_still_waiting_for_a_slot(tokenizer):
    factory, _ = stragglers({("b", 0)})
    rollout = {"step_deadline": {"after_fraction": 0.3, "grace_s": 0.1}}
    async with EpisodeRunner(env_factory=factory, concurrency=1, rollout=rollout) as runner:
        trajs = await runner.collect(["a", "b", "c"], ScriptedEngine(tokenizer, [SUBMIT]), tokenizer,
                                     progress=False)
    assert [(t.task_id, t.finish_reason, t.grade.get("phase")) for t in trajs] == [
        ("a", "submitted", None), ("b", "deadline", "reset"), ("c", "deadline", "queued")]
    assert all(t.error.startswith("step_deadline") for t in trajs[1:])


async def test_step_deadline_waits_for_the_grace_period(tokenizer):
    class SlowB(ScriptedEnv):
        async def astep(self, action):
            if self.task == "b":
                await asyncio.sleep(0.3)
            return await super().astep(action)

    rollout = {"step_deadline": {"after_fraction": 0.5, "grace_s": 2.0}}
    async with EpisodeRunner(env_factory=SlowB, concurrency=2, rollout=rollout) as runner:
        trajs = await runner.collect(["a", "b"], ScriptedEngine(tokenizer, [SUBMIT]), tokenizer, progress=False)
    assert [t.finish_reason for t in trajs] == ["submitted", "submitted"]  # late, but within the grace


def refill(grace_s: float = 0.2, **more) -> dict:
    return {"step_deadline": {"after_fraction": 0.8, "grace_s": grace_s, "partial_groups": "refill", **more}}


def groups_of(trajs: list[Trajectory], tasks: str) -> list[list[Trajectory]]:
    return [[t for t in trajs if t.task_id == task] for task in tasks]


async def test_refill_replays_the_cut_member_and_its_group_is_whole_again(tokenizer):
    factory, envs = stragglers({("b", 0)})
    started = time.monotonic()
    async with EpisodeRunner(env_factory=factory, concurrency=6, rollout=refill(refill_s=5.0)) as runner:
        trajs = await runner.collect(["a", "b"], ScriptedEngine(tokenizer, [LS, SUBMIT]), tokenizer, group_size=3,
                                     agent_config={"max_turns": 4}, progress=False, seed=100)
    assert time.monotonic() - started < 3.0
    # The cut member stays (never trained), its refill right after it: same task and group index.
    assert [t.task_id for t in trajs] == ["a"] * 3 + ["b"] * 4
    at = next(i for i, t in enumerate(trajs) if t.error is not None)
    cut, replacement = trajs[at], trajs[at + 1]
    assert cut.grade["cut_by"] == "step" and cut.error.startswith("step_deadline: ") and not cut.refill
    assert replacement.refill and replacement.group_index == cut.group_index and replacement.trainable
    assert sum(t.refill for t in trajs) == 1 and sum(t.error is not None for t in trajs) == 1
    # Played through the same episode path on a seed after the batch's six: 100 + 6 + b's index.
    assert factory.seeds[-1] == ("b", 100 + 6 + 3 + cut.group_index)
    summary = summarize(trajs)
    assert (summary["refilled_episodes"], summary["deadline_cuts"], summary["trainable"]) == (1, 1, 6)
    kept, dropped = apply_partial_group_policy(groups_of(trajs, "ab"), 3, "refill")
    assert [len(g) for g in kept] == [3, 3] and dropped == 0
    assert all(env.closed for env in envs if env.task == "b" and env.turns == 0)


async def test_a_refill_that_misses_its_bound_is_cut_and_the_group_keeps_the_rest(tokenizer):
    factory, _ = stragglers({("b", 0), ("b", 3)})  # the member cut and its refill (b's 4th reset) hang
    started = time.monotonic()
    async with EpisodeRunner(env_factory=factory, concurrency=6, rollout=refill(refill_s=0.3)) as runner:
        trajs = await runner.collect(["a", "b"], ScriptedEngine(tokenizer, [SUBMIT]), tokenizer, group_size=3,
                                     progress=False)
    assert time.monotonic() - started < 3.0  # one refill round, bounded: no second tail
    [replacement] = [t for t in trajs if t.refill]
    assert replacement.error.startswith("step_deadline: ") and replacement.grade["cut_by"] == "step"
    assert summarize(trajs)["refilled_episodes"] == 1
    kept, dropped = apply_partial_group_policy(groups_of(trajs, "ab"), 3, "refill")
    assert [len(g) for g in kept] == [3, 2] and dropped == 0  # the fallback is "keep"


async def test_the_refill_round_by_default_gets_as_long_as_the_step_took(tokenizer):
    factory, _ = stragglers({("b", 0), ("b", 1)}, step_s=0.5)  # a takes ~0.5 s; b and its refill hang
    rollout = {"step_deadline": {"after_fraction": 0.5, "grace_s": 0.1, "partial_groups": "refill"}}
    started = time.monotonic()
    async with EpisodeRunner(env_factory=factory, concurrency=2, rollout=rollout) as runner:
        trajs = await runner.collect(["a", "b"], ScriptedEngine(tokenizer, [SUBMIT]), tokenizer, progress=False)
    assert [t.task_id for t in trajs] == ["a", "b", "b"] and trajs[2].refill
    assert trajs[2].grade["cut_by"] == "step"
    # Half the step (a) was done after ~0.5 s: the refill round got that long, not less.
    assert trajs[2].timings["total_s"] >= 0.45 and time.monotonic() - started < 3.0


async def test_a_cancelled_episode_closes_its_env_in_the_background(tokenizer):
    """What a step cut on a Ray worker is: its task cancelled. The env (its container) goes."""
    env = BlockedThreadEnv()
    runner = runner_with(env)
    episode = asyncio.ensure_future(play(runner, ScriptedEngine(tokenizer, [HANG]), tokenizer))
    await asyncio.sleep(0.3)
    episode.cancel()
    with pytest.raises(asyncio.CancelledError):
        await episode
    assert await run_blocking(env.thread_freed.wait, 5)  # closing destroyed the "container"
    await runner.aclose()
    assert env.closed and runner._idle == []


# ---------------------------------------------------------------------- groups and config


def traj(task: str, i: int, **kw) -> Trajectory:
    return Trajectory(task_id=task, group_index=i, **kw)


def test_partial_group_policy():
    full = [traj("a", i) for i in range(4)]
    lost_one = [traj("b", 0), traj("b", 1, error="step_deadline: cut"), traj("b", 2), traj("b", 3)]
    lost_three = [traj("c", 0), traj("c", 1, error="x"), traj("c", 2, text_mode=True), traj("c", 3, error="y")]
    kept, dropped = apply_partial_group_policy([full, lost_one, lost_three], 4, "keep")
    assert [[t.group_index for t in g] for g in kept] == [[0, 1, 2, 3], [0, 2, 3]] and dropped == 1
    kept, dropped = apply_partial_group_policy([full, lost_one, lost_three], 4, "drop")
    assert kept == [full] and dropped == 2
    # Groups the trainer already stripped of broken members: missing members count as lost.
    kept, dropped = apply_partial_group_policy([full[:3]], 4, "drop")
    assert kept == [] and dropped == 1
    # G=1: a lone sample is a whole group.
    assert apply_partial_group_policy([[traj("d", 0)]], 1, "keep") == ([[traj("d", 0)]], 0)
    with pytest.raises(ValueError, match="keep"):
        apply_partial_group_policy([full], 4, "replay")


def test_rollout_config_deadline_fields():
    cfg = RolloutConfig.from_config({"episode_deadline_s": 600, "step_deadline": {}})
    assert cfg.reserve_s == 60.0 and cfg.deadline_policy == "truncate"
    assert cfg.step_deadline == StepDeadline(after_fraction=0.9, grace_s=30.0, partial_groups="keep")
    assert RolloutConfig.from_config({"episode_deadline_s": 100}).reserve_s == 20.0
    assert RolloutConfig().reserve_s == 0.0 and RolloutConfig().new_deadline().at is None
    assert RolloutConfig().partial_group_policy == "keep"
    assert RolloutConfig.from_config({"step_deadline": {"partial_groups": "drop"}}).partial_group_policy == "drop"
    with pytest.raises(ConfigError, match="deadline_reserve_s"):
        RolloutConfig.from_config({"episode_deadline_s": 10, "deadline_reserve_s": 10})
    with pytest.raises(ConfigError, match="after_fraction"):
        RolloutConfig.from_config({"step_deadline": {"after_fraction": 0}})
    with pytest.raises(ConfigError, match="deadline_policy"):
        RolloutConfig.from_config({"deadline_policy": "ignore"})
    with pytest.raises(ConfigError, match="grace"):
        RolloutConfig.from_config({"step_deadline": {"grace": 3}})
    refilling = RolloutConfig.from_config(refill(refill_s=120))
    assert refilling.partial_group_policy == "refill" and refilling.step_deadline.refill_s == 120
    assert RolloutConfig.from_config(refill()).step_deadline.refill_s is None
    with pytest.raises(ConfigError, match="refill_s only bounds the refill round"):
        RolloutConfig.from_config({"step_deadline": {"partial_groups": "keep", "refill_s": 60}})
    runner = EpisodeRunner(env_factory=ScriptedEnv, rollout=cfg)
    assert runner.concurrency == cfg.concurrency and runner.rollout is cfg
    assert EpisodeRunner(env_factory=ScriptedEnv, concurrency=2, rollout=cfg).concurrency == 2


# ---------------------------------------------------------------------- a real sandbox and grader

HANG_COMMAND = "```bash\nsleep 1000\n```"
STALL_GRADER = "```bash\necho 'import time; time.sleep(1000)' >> datekit/__init__.py\n```"


@pytest.mark.docker
def test_real_hung_command_and_stalled_grader_are_cut_and_the_batch_completes(tokenizer):
    """Three episodes of one real task, one reply each (env max_turns=1, then graded): a command
    that outlives the deadline (its own timeout is longer), a patch that makes every import hang
    so the grader stalls (its test timeout is longer too), and a plain `ls`, graded as usual
    (about 5 s here, so a 10 s deadline leaves it room on a loaded machine)."""
    import docker

    from envs.suites import load_suite

    task = load_suite("datekit", difficulty="easy")[0]
    deadline_s, own_timeouts_s = 10.0, 15.0
    env = {"max_turns": 1, "command_timeout_s": own_timeouts_s, "grading": {"test_timeout_s": own_timeouts_s}}
    # The engine hands the replies out in call order, one call per episode: each gets its own.
    engine = ScriptedEngine(tokenizer, [HANG_COMMAND, STALL_GRADER, LS])
    with EpisodeRunner(env, concurrency=3, rollout={"episode_deadline_s": deadline_s}) as runner:
        runner.prepare([task])  # build the image (if needed) outside the timed part
        started = time.monotonic()
        trajs = asyncio.run(runner.collect([task], engine, tokenizer, group_size=3,
                                           agent_config={"max_tokens_per_turn": 64}, progress=False))
        took = time.monotonic() - started
    assert took < deadline_s + 4, took  # the step completes at the deadline, not at the hangs' own timeouts
    hung, stalled, plain = (_reply(trajs, r) for r in (HANG_COMMAND, STALL_GRADER, LS))
    for cut in (hung, stalled):
        assert (cut.finish_reason, cut.grade.get("phase"), cut.error, cut.reward) == ("deadline", "step", None, 0.0)
        assert cut.trainable and cut.num_turns == 1 and cut.timings["deadline_s"] == deadline_s
    assert plain.error is None and plain.finish_reason == "max_turns" and "deadline" not in plain.grade
    assert plain.grade["instance_id"] == task.instance_id and not plain.grade["resolved"]  # really graded
    # The hung command's container went with the cut (closing the env); the stalled grade's goes
    # once the grader's own test timeout ends it.
    client = docker.from_env()
    mine = {"label": f"agent-rl.owner-pid={os.getpid()}"}
    until = time.monotonic() + own_timeouts_s + 10
    while client.api.containers(all=True, filters=mine) and time.monotonic() < until:
        time.sleep(0.5)
    assert client.api.containers(all=True, filters=mine) == []


def _reply(trajs: list[Trajectory], reply: str) -> Trajectory:
    found = [t for t in trajs if any(m["role"] == "assistant" and m["content"].strip() == reply for m in t.messages)]
    assert len(found) == 1, [t.messages[-1:] for t in trajs]
    return found[0]


@pytest.mark.docker
def test_real_refill_replaces_a_hung_episode_with_a_graded_one(tokenizer):
    """Three episodes of one real task, one reply each: the first to ask runs a command that
    would hang for 1000 s (its own timeout is longer still), the two others list files. Once
    those two are graded the step deadline cuts the hang (its container goes with it) and the
    refill round plays the group's third member again, for real, and grades it."""
    import docker

    from envs.suites import load_suite

    task = load_suite("datekit", difficulty="easy")[0]
    env = {"max_turns": 1, "command_timeout_s": 300.0}
    engine = ScriptedEngine(tokenizer, [HANG_COMMAND, LS, LS, LS])  # in call order: the refill lists files
    rollout = {"step_deadline": {"after_fraction": 0.6, "grace_s": 1.0, "partial_groups": "refill", "refill_s": 40.0}}
    client = docker.from_env()
    mine = {"label": f"agent-rl.owner-pid={os.getpid()}"}
    with EpisodeRunner(env, concurrency=3, rollout=rollout) as runner:
        runner.prepare([task])  # build the image (if needed) outside the timed part
        started = time.monotonic()
        trajs = asyncio.run(runner.collect([task], engine, tokenizer, group_size=3,
                                           agent_config={"max_tokens_per_turn": 64}, progress=False))
        took = time.monotonic() - started
        # The cut closed the hung episode's environment: no container still runs the command.
        until = time.monotonic() + 20
        while _running_command(client, mine, "sleep 1000") and time.monotonic() < until:
            time.sleep(0.5)
        assert not _running_command(client, mine, "sleep 1000")
    assert took < 60, took
    hung = _reply(trajs, HANG_COMMAND)
    assert (hung.finish_reason, hung.grade["cut_by"], hung.refill) == ("deadline", "step", False)
    assert hung.error.startswith("step_deadline: ") and not hung.trainable
    replacement = trajs[trajs.index(hung) + 1]
    assert replacement.refill and replacement.group_index == hung.group_index and replacement.error is None
    assert replacement.finish_reason == "max_turns" and replacement.grade["instance_id"] == task.instance_id
    assert "deadline" not in replacement.grade and replacement.trainable  # really graded
    assert [t.refill for t in trajs].count(True) == 1 and len(trajs) == 4
    kept, dropped = apply_partial_group_policy([trajs], 3, "refill")
    assert [len(g) for g in kept] == [3] and dropped == 0
    assert summarize(trajs)["refilled_episodes"] == 1
    until = time.monotonic() + 30
    while client.api.containers(all=True, filters=mine) and time.monotonic() < until:
        time.sleep(0.5)
    assert client.api.containers(all=True, filters=mine) == []


def _running_command(client, filters: dict, command: str) -> bool:
    """Whether any running container matching `filters` runs `command` (docker top)."""
    import docker

    for container in client.containers.list(filters=filters):
        try:
            processes = container.top()["Processes"] or []
        except docker.errors.APIError:  # removed (or stopping) since listed
            continue
        if any(command in " ".join(row) for row in processes):
            return True
    return False
