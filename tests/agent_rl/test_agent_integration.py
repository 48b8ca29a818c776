"""Real episodes: SWEEnv in Docker, SmolLM2 through HFEngine, real chat templates.

The engine is wrapped (not replaced) by a recorder, so each test can compare the trajectory
with exactly what the engine was fed and what it sampled.
"""
from __future__ import annotations

import asyncio
import copy
import os
import socket
import subprocess
import sys
import time

import pytest

from agent_rl.rollout.agent import AgentConfig, run_episode
from agent_rl.rollout.chat_template import TokenConversation, decode_exact, encode
from agent_rl.engines.base import Generation, SamplingParams
from agent_rl.rollout.prompts import initial_messages

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Qwen2-Instruct's chat template (ChatML, default system prompt when none is given).
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TOKENS_PER_TURN = 24


class RecordingEngine:
    """Passes every call to the real engine and keeps what went in and came out."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.name = f"recording-{engine.name}"
        self.calls: list[tuple[list[int], SamplingParams, Generation]] = []

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        generation = await self.engine.generate(prompt_ids, sampling)
        self.calls.append((list(prompt_ids), sampling, generation))
        return generation

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def smollm2():
    from agent_rl.engines.hf import HFEngine
    from agent_rl.engines.models import load_model

    model, tokenizer = load_model("smollm2-135m")
    engine = HFEngine(model, tokenizer)
    yield engine, tokenizer
    engine.close_sync()


@pytest.fixture(scope="module")
def easy_task():
    from envs.suites import load_suite

    return load_suite("datekit", difficulty="easy")[0]


def make_env(task, max_turns: int):
    from envs.swe_env import SWEEnv

    return SWEEnv(tasks=[task], config={"max_turns": max_turns})


def assert_token_exact(traj, recorder: RecordingEngine, tokenizer) -> None:
    full = traj.prompt_ids + traj.response_ids
    assert traj.error is None, traj.error
    assert len(recorder.calls) == traj.num_turns >= 1
    sampled_total = 0
    for prompt, _, generation in recorder.calls:
        # The engine saw a prefix of the trajectory, then sampled exactly the next ids.
        assert full[: len(prompt)] == prompt
        end = len(prompt) + len(generation.token_ids)
        assert full[len(prompt): end] == generation.token_ids
        offset = len(traj.prompt_ids)
        assert traj.loss_mask[len(prompt) - offset: end - offset] == [1] * len(generation.token_ids)
        assert traj.behaviour_logprobs[len(prompt) - offset: end - offset] == generation.logprobs
        sampled_total += len(generation.token_ids)
    assert sum(traj.loss_mask) == sampled_total  # mask is 1 exactly on sampled ids
    assert all(lp == 0.0 for lp, m in zip(traj.behaviour_logprobs, traj.loss_mask) if not m)

    open_turn = traj.messages[-1]["role"] != "assistant"
    rendered = list(tokenizer.apply_chat_template(traj.messages, tokenize=True, add_generation_prompt=open_turn))
    if rendered != full:
        # Allowed only where the model sampled a non-canonical tokenization of its own text;
        # the text must still be identical.
        assert decode_exact(tokenizer, rendered) == decode_exact(tokenizer, full)
        segments = [g.token_ids for _, _, g in recorder.calls]
        assert any(encode(tokenizer, decode_exact(tokenizer, s)) != s for s in segments)


@pytest.mark.parametrize("template", ["smollm2", "qwen2"])
async def test_real_episode_is_token_exact(smollm2, easy_task, template):
    engine, tokenizer = smollm2
    if template == "qwen2":
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.chat_template = QWEN2_TEMPLATE
    recorder = RecordingEngine(engine)
    env = make_env(easy_task, max_turns=3)
    config = AgentConfig(max_turns=2, max_tokens_per_turn=TOKENS_PER_TURN, sampling={"seed": 11})
    try:
        traj = await run_episode(env, recorder, tokenizer, config, task=easy_task)
    finally:
        await env.aclose()
    assert_token_exact(traj, recorder, tokenizer)
    assert traj.num_turns == 2 and traj.truncated and traj.finish_reason == "max_turns"
    assert "resolved" in traj.grade  # truncated episodes are graded too
    if template == "qwen2":
        assert traj.messages[0]["role"] == "system"


async def test_context_overflow_truncates_and_is_graded(smollm2, easy_task):
    engine, tokenizer = smollm2
    recorder = RecordingEngine(engine)
    env = make_env(easy_task, max_turns=5)
    config = AgentConfig(max_turns=5, max_tokens_per_turn=16, sampling={"seed": 3})
    try:
        observation, _ = await env.areset(options={"task": easy_task})
        prompt = TokenConversation.start(tokenizer, initial_messages(config.templates(), observation))
        # Room for one short reply, not for the observation that follows it.
        config.max_total_tokens = len(prompt) + 20
        traj = await run_episode(env, recorder, tokenizer, config, task=easy_task)
    finally:
        await env.aclose()
    assert_token_exact(traj, recorder, tokenizer)
    assert (traj.finish_reason, traj.truncated, traj.terminated) == ("context", True, False)
    assert traj.num_turns == 1 and traj.reward == 0.0
    assert "resolved" in traj.grade and traj.grade["resolved"] is False
    for prompt_ids, sampling, _ in recorder.calls:
        assert len(prompt_ids) + sampling.max_tokens <= config.max_total_tokens


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float = 300) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"agent-rl serve exited with {proc.returncode}")
            try:
                async with http.get(f"{url}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("agent-rl serve did not become healthy")


class KillServerDuringFirstRequest(RecordingEngine):
    """Sends the first request to the real server, then kills the server while it decodes."""

    def __init__(self, engine, proc: subprocess.Popen) -> None:
        super().__init__(engine)
        self.proc = proc

    async def generate(self, prompt_ids, sampling):
        request = asyncio.ensure_future(self.engine.generate(prompt_ids, sampling))
        await asyncio.sleep(0.5)  # prefill of the ~400-token prompt alone takes longer on CPU
        self.proc.kill()
        return await request


async def test_server_killed_mid_request_gives_error_trajectory(smollm2, easy_task, tmp_path):
    from agent_rl.engines.openai_http import OpenAIEngine

    _, tokenizer = smollm2
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_rl.cli", "serve", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    remote = OpenAIEngine(f"http://127.0.0.1:{port}", "smollm2-135m", max_retries=1, backoff_s=0.1, timeout_s=60)
    env = make_env(easy_task, max_turns=3)
    try:
        await _wait_healthy(proc, f"http://127.0.0.1:{port}")
        engine = KillServerDuringFirstRequest(remote, proc)
        config = AgentConfig(max_turns=3, max_tokens_per_turn=256, sampling={"seed": 1})
        traj = await run_episode(env, engine, tokenizer, config, task=easy_task)
    finally:
        await env.aclose()
        await remote.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    assert traj.error is not None and "EngineError" in traj.error
    assert traj.finish_reason == "error" and not traj.trainable
    assert traj.task_id == easy_task.instance_id and traj.prompt_ids  # kept for debugging
