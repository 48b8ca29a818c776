"""Agent loop and rollout logic with unit-test doubles (a scripted engine and env).

These run in seconds and pin the loop's bookkeeping; the real-part tests (Docker env,
HFEngine, a killed server) are in test_agent_integration.py and test_rollout.py.
"""
from __future__ import annotations

import asyncio

import pytest

from agent_rl.rollout.agent import AgentConfig, run_episode
from agent_rl.engines.base import EngineError, Generation, SamplingParams
from agent_rl.rollout.runner import collect, summarize
from strictconfig import ConfigError

IM_END = 2


@pytest.fixture(scope="module")
def tokenizer():
    from agent_rl.engines.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


class ScriptedEngine:
    """Replies with scripted texts (tokenized once, as if sampled), honouring max_tokens."""

    name = "scripted"

    def __init__(self, tokenizer, replies: list[str], *, fail_on_call: int | None = None, text_mode=False):
        self.tokenizer = tokenizer
        self.replies = replies
        self.fail_on_call = fail_on_call
        self.text_mode = text_mode
        self.calls: list[tuple[list[int], SamplingParams]] = []
        self.outputs: list[list[int]] = []

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        self.calls.append((list(prompt_ids), sampling))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise EngineError("server went away")
        text = self.replies[(len(self.calls) - 1) % len(self.replies)]
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [IM_END]
        finish = "stop"
        if len(ids) > sampling.max_tokens:
            ids, finish = ids[: sampling.max_tokens], "length"
        self.outputs.append(ids)
        logprobs = [-0.25] * len(ids)
        return Generation(ids, logprobs, finish, text=text, text_mode=self.text_mode)

    async def close(self) -> None:
        pass


class ScriptedEnv:
    """Submits when the action says `submit`; echoes otherwise; `afinish` grades as unresolved."""

    def __init__(self, *, broken_tasks=(), max_turns: int = 100):
        self.broken_tasks = set(broken_tasks)
        self.max_turns = max_turns
        self.finished: list[str] = []
        self.actions: list[str] = []
        self.closed = False
        self.task = None

    async def areset(self, *, seed=None, options=None):
        self.task = (options or {}).get("task", "t0")
        if self.task in self.broken_tasks:
            raise RuntimeError(f"repo for {self.task} does not exist")
        self.turns = 0
        return "Fix the bug in calc.py. Reply with one ```bash``` block.", {"task_id": self.task}

    async def astep(self, action: str):
        self.actions.append(action)
        self.turns += 1
        await asyncio.sleep(0)
        if "submit" in action:
            return "Submitted.", 1.0, True, False, {"grade": {"resolved": True}, "end_reason": "submitted", "patch": "diff"}
        if self.turns >= self.max_turns:
            return "limit", 0.0, False, True, {"grade": {"resolved": False}, "end_reason": "max_turns"}
        return f"ran: {action[:20]}\nexit code 0", 0.0, False, False, {}

    async def afinish(self, reason: str):
        self.finished.append(reason)
        return "ended", 0.0, False, True, {"grade": {"resolved": False}, "end_reason": reason}

    async def aclose(self):
        self.closed = True


def sampled_segments(traj) -> list[list[int]]:
    segments, current = [], []
    for tok, m in zip(traj.response_ids, traj.loss_mask):
        if m:
            current.append(tok)
        elif current:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return segments


async def test_episode_until_submit(tokenizer):
    engine = ScriptedEngine(tokenizer, ["```bash\nls\n```", "```bash\nsubmit\n```"])
    env = ScriptedEnv()
    traj = await run_episode(env, engine, tokenizer, AgentConfig(max_turns=5), task="t1", policy_version=3)
    assert traj.error is None, traj.error
    assert (traj.terminated, traj.truncated, traj.finish_reason) == (True, False, "submitted")
    assert traj.reward == 1.0 and traj.resolved and traj.patch == "diff"
    assert traj.num_turns == 2 and traj.policy_version == 3 and traj.task_id == "t1"
    assert sampled_segments(traj) == engine.outputs
    assert all(lp == -0.25 for lp, m in zip(traj.behaviour_logprobs, traj.loss_mask) if m)
    assert all(lp == 0.0 for lp, m in zip(traj.behaviour_logprobs, traj.loss_mask) if not m)
    # Turn 2 was generated from exactly the ids the trajectory holds before it.
    second_prompt = engine.calls[1][0]
    assert second_prompt == (traj.prompt_ids + traj.response_ids)[: len(second_prompt)]
    assert env.actions == ["```bash\nls\n```", "```bash\nsubmit\n```"]
    assert [m["role"] for m in traj.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert set(traj.timings) == {"generation_s", "env_s", "grading_s", "total_s"}
    rendered = tokenizer.apply_chat_template(traj.messages, tokenize=True)
    assert list(rendered) == traj.prompt_ids + traj.response_ids


async def test_agent_max_turns_truncates_and_grades(tokenizer):
    engine = ScriptedEngine(tokenizer, ["```bash\nls\n```"])
    env = ScriptedEnv()
    traj = await run_episode(env, engine, tokenizer, AgentConfig(max_turns=2), task="t1")
    assert (traj.truncated, traj.terminated, traj.finish_reason) == (True, False, "max_turns")
    assert env.finished == ["max_turns"] and traj.grade == {"resolved": False}
    assert traj.num_turns == 2 and traj.error is None


async def test_env_truncation_is_recorded(tokenizer):
    engine = ScriptedEngine(tokenizer, ["```bash\nls\n```"])
    traj = await run_episode(ScriptedEnv(max_turns=2), engine, tokenizer, AgentConfig(max_turns=9), task="t")
    assert (traj.truncated, traj.finish_reason, traj.num_turns) == (True, "max_turns", 2)


async def test_context_budget_truncates_and_grades(tokenizer):
    engine = ScriptedEngine(tokenizer, ["I will now list every file in the repository.\n```bash\nls -la\n```"])
    env = ScriptedEnv()
    probe = await run_episode(ScriptedEnv(), ScriptedEngine(tokenizer, ["```bash\nsubmit\n```"]), tokenizer, AgentConfig(), task="t")
    budget = len(probe.prompt_ids) + 40
    config = AgentConfig(max_turns=10, max_total_tokens=budget, max_tokens_per_turn=32)
    traj = await run_episode(env, engine, tokenizer, config, task="t")
    assert (traj.truncated, traj.finish_reason) == (True, "context")
    assert env.finished == ["context"]
    for prompt, sampling in engine.calls:
        assert sampling.max_tokens == min(32, budget - len(prompt))
        assert len(prompt) + sampling.max_tokens <= budget
    # Only the template's closing tokens may go past the budget.
    assert len(traj.prompt_ids) + len(traj.response_ids) <= budget + 2


async def test_wall_clock_limit(tokenizer):
    engine = ScriptedEngine(tokenizer, ["```bash\nls\n```"])
    env = ScriptedEnv()
    traj = await run_episode(env, engine, tokenizer, AgentConfig(max_wall_s=1e-9), task="t")
    assert traj.finish_reason == "time" and env.finished == ["time"]


async def test_engine_failure_is_an_error_trajectory(tokenizer):
    engine = ScriptedEngine(tokenizer, ["```bash\nls\n```"], fail_on_call=2)
    traj = await run_episode(ScriptedEnv(), engine, tokenizer, AgentConfig(), task="t", group_index=1)
    assert traj.error is not None and "EngineError" in traj.error and "server went away" in traj.error
    assert traj.finish_reason == "error" and not traj.trainable and traj.group_index == 1
    assert traj.num_turns == 1  # the partial episode is kept for debugging


class SlowEngine(ScriptedEngine):
    """Takes `delay_s` per reply, so the turn's generation time is known from below."""

    delay_s = 0.02

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        await asyncio.sleep(self.delay_s)
        return await super().generate(prompt_ids, sampling)


class SlowEnv(ScriptedEnv):
    """Takes `delay_s` per step (the command run)."""

    delay_s = 0.03

    async def astep(self, action: str):
        await asyncio.sleep(self.delay_s)
        return await super().astep(action)


def _check_turn_timings(traj) -> None:
    assert len(traj.turn_timings) == traj.num_turns
    for t in traj.turn_timings:
        assert set(t) == {"generation_s", "env_s", "total_s"}
        assert all(isinstance(v, float) and v >= 0.0 for v in t.values())
        assert t["total_s"] >= t["generation_s"] + t["env_s"] - 1e-3  # rounding to 4 digits


async def test_turn_timings_are_recorded_per_turn_and_round_trip(tokenizer):
    import json

    from agent_rl.rollout.trajectory import Trajectory

    engine = SlowEngine(tokenizer, ["```bash\nls\n```", "```bash\nls\n```", "```bash\nsubmit\n```"])
    traj = await run_episode(SlowEnv(), engine, tokenizer, AgentConfig(max_turns=5), task="t")
    assert traj.error is None and traj.num_turns == 3
    _check_turn_timings(traj)
    # Lower bounds only (a loaded machine may be slower); a small tolerance for timer granularity.
    assert all(t["generation_s"] >= SlowEngine.delay_s * 0.9 for t in traj.turn_timings)
    assert all(t["env_s"] >= SlowEnv.delay_s * 0.9 for t in traj.turn_timings)  # the submit step too

    again = Trajectory.from_dict(json.loads(json.dumps(traj.to_dict())))
    assert again.turn_timings == traj.turn_timings

    old = traj.to_dict()
    del old["turn_timings"]  # a trajectories.jsonl line written before per-turn timings were kept
    assert Trajectory.from_dict(old).turn_timings == []


async def test_turn_timings_when_the_agent_stops_or_the_engine_fails(tokenizer):
    capped = await run_episode(ScriptedEnv(), ScriptedEngine(tokenizer, ["```bash\nls\n```"]), tokenizer,
                               AgentConfig(max_turns=2), task="t")
    assert capped.finish_reason == "max_turns"
    _check_turn_timings(capped)
    failed = await run_episode(ScriptedEnv(), ScriptedEngine(tokenizer, ["```bash\nls\n```"], fail_on_call=2),
                               tokenizer, AgentConfig(), task="t")
    assert failed.error is not None
    _check_turn_timings(failed)  # the reply that was appended before the engine failed


async def test_text_mode_engine_marks_trajectory(tokenizer):
    engine = ScriptedEngine(tokenizer, ["```bash\nsubmit\n```"], text_mode=True)
    traj = await run_episode(ScriptedEnv(), engine, tokenizer, AgentConfig(), task="t")
    assert traj.text_mode and not traj.trainable and traj.error is None


async def test_prompt_overrides(tokenizer):
    engine = ScriptedEngine(tokenizer, ["```bash\nsubmit\n```"])
    config = AgentConfig.from_config(
        {"prompts": {"system": "SYS {{ task_id }}", "instance": "TASK:\n{{ observation }}"}, "sampling": {"seed": 7}},
    )
    traj = await run_episode(ScriptedEnv(), engine, tokenizer, config, task="t9")
    assert traj.messages[0] == {"role": "system", "content": "SYS t9"}
    assert traj.messages[1]["content"].startswith("TASK:\nFix the bug")
    assert engine.calls[0][1].seed is not None
    bare = AgentConfig.from_config({"prompts": {"template": "bare"}})
    traj = await run_episode(ScriptedEnv(), engine, tokenizer, bare, task="t9")
    assert traj.messages[0]["role"] == "user"  # SmolLM2's template adds its default system prompt


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="max_turn"):
        AgentConfig.from_config({"max_turn": 3})
    with pytest.raises(ConfigError, match="max_total_tokens"):
        AgentConfig.from_config({"max_total_tokens": 0})
    with pytest.raises(ConfigError, match="temperatur"):
        AgentConfig.from_config({"sampling": {"temperatur": 0.5}})
    with pytest.raises(ConfigError, match="prompt template 'instance'"):
        AgentConfig(prompts=AgentConfig.from_config({"prompts": {"instance": "{{ oops"}}).prompts).templates()
    with pytest.raises(ConfigError, match="neither a built-in"):
        AgentConfig.from_config({"prompts": {"template": "nope"}}).templates()


async def test_collect_records_broken_task_and_returns_the_rest(tokenizer):
    envs: list[ScriptedEnv] = []

    def make_env():
        envs.append(ScriptedEnv(broken_tasks={"broken"}))
        return envs[-1]

    engine = ScriptedEngine(tokenizer, ["```bash\nls\n```", "```bash\nsubmit\n```"])
    trajs = await collect(
        ["a", "broken", "b"], engine, tokenizer, group_size=2, concurrency=2,
        agent_config={"max_turns": 4}, progress=False, env_factory=make_env, policy_version=5,
    )
    assert [(t.task_id, t.group_index) for t in trajs] == [
        ("a", 0), ("a", 1), ("broken", 0), ("broken", 1), ("b", 0), ("b", 1)
    ]
    errors = [t for t in trajs if t.error]
    assert [t.task_id for t in errors] == ["broken", "broken"]
    assert all("does not exist" in t.error for t in errors)
    assert all(t.policy_version == 5 for t in trajs)
    assert all(envs_closed.closed for envs_closed in envs)
    summary = summarize(trajs)
    assert summary["errors"] == 2 and summary["episodes"] == 6 and summary["trainable"] == 4


async def test_collect_env_factory_failure(tokenizer):
    def make_env():
        raise OSError("docker is down")

    engine = ScriptedEngine(tokenizer, ["```bash\nsubmit\n```"])
    trajs = await collect(["a", "b"], engine, tokenizer, concurrency=3, progress=False, env_factory=make_env)
    assert len(trajs) == 2 and all("docker is down" in t.error for t in trajs)
