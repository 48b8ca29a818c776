"""Engine capabilities: declared as async Protocols, dispatched on, checked at start-up.

Real engines (HFEngine on a tiny model, OpenAIEngine against a real loopback HTTP server, the
trainer itself) next to small unit doubles that lack one capability at a time.
"""
from __future__ import annotations

import asyncio
import copy
import threading
from pathlib import Path

import pytest
from aiohttp import web

from agent_rl.engines.base import Generation, SamplingParams
from agent_rl.engines.capabilities import (
    CLOSE,
    EVALUATION,
    GENERATE,
    GENERATE_TOKEN_IDS,
    LOAD_CHECKPOINT,
    RECEIVE_WEIGHTS,
    SCORE_LOGPROBS,
    TRAINING,
    EngineCapabilityError,
    capabilities,
    require,
    wants_messages,
)
from agent_rl.engines.hf import HFEngine
from agent_rl.engines.models import load_tokenizer, tiny_random_model
from agent_rl.engines.openai_http import OpenAIEngine
from agent_rl.rollout.agent import AgentConfig, run_episode
from agent_rl.train.weight_sync import WeightSyncError, push_weights

REPLY = "```bash\nsubmit\n```"


# ----- unit doubles: each lacks something ------------------------------------------------


class GenerateOnly:
    name = "generate-only"

    def __init__(self) -> None:
        self.prompts: list[list[int]] = []

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        self.prompts.append(list(prompt_ids))
        return Generation([7], [-0.5], "stop", text="x")

    async def close(self) -> None:
        pass


class SyncClose(GenerateOnly):
    def close(self) -> None:  # type: ignore[override]  # not async: does not count as "close"
        pass


class StreamsWeights(GenerateOnly):
    async def update_weights(self, named_tensors, version=None) -> int:
        self.received = dict(named_tensors)
        self.version = version
        return version


class LoadsFromDisk(GenerateOnly):
    async def load_checkpoint(self, path: str, version=None) -> int:
        self.path = path
        return version


class ChatOnly(GenerateOnly):
    """A text-mode chat server double: it wants the messages."""

    wants_messages = True

    async def generate(self, prompt_ids, sampling, *, messages=None) -> Generation:  # type: ignore[override]
        self.messages = messages
        return await super().generate(prompt_ids, sampling)

    async def load_checkpoint(self, path: str, version=None) -> int:
        return version


def test_capabilities_of_doubles():
    assert capabilities(GenerateOnly()) == {GENERATE, GENERATE_TOKEN_IDS, CLOSE}
    assert CLOSE not in capabilities(SyncClose())  # every capability method must be async
    assert RECEIVE_WEIGHTS in capabilities(StreamsWeights())
    assert LOAD_CHECKPOINT in capabilities(LoadsFromDisk())
    chat = capabilities(ChatOnly())
    assert GENERATE in chat and GENERATE_TOKEN_IDS not in chat and wants_messages(ChatOnly())
    assert not wants_messages(GenerateOnly())


def test_start_up_check_names_the_missing_capability():
    require(GenerateOnly(), EVALUATION, "evaluate")  # an eval needs only "generate"
    with pytest.raises(EngineCapabilityError,
                       match="'generate-only' cannot be used to train: it lacks 'receive weights' or 'load checkpoint'"):
        require(GenerateOnly(), TRAINING, "train")
    with pytest.raises(EngineCapabilityError, match="lacks 'generate token ids'.*text-mode"):
        require(ChatOnly(), TRAINING, "train")
    assert require(StreamsWeights(), TRAINING, "train") >= {RECEIVE_WEIGHTS}
    with pytest.raises(EngineCapabilityError, match="lacks 'generate'"):
        require(object(), EVALUATION, "evaluate")


@pytest.fixture(scope="module")
def tiny():
    tokenizer = load_tokenizer("smollm2-135m")
    return tiny_random_model({"vocab_size": len(tokenizer)}, model_type="llama"), tokenizer


async def test_push_weights_dispatches_on_the_declared_protocol(tiny, tmp_path):
    model, tokenizer = tiny
    streams = StreamsWeights()
    assert await push_weights(streams, model, tokenizer, 3, tmp_path) == "update_weights"
    assert set(streams.received) == set(model.state_dict()) and streams.version == 3
    disk = LoadsFromDisk()
    assert await push_weights(disk, model, tokenizer, 4, tmp_path) == "checkpoint_reload"
    assert (tmp_path / "current" / "config.json").is_file() and disk.path == str((tmp_path / "current").resolve())
    with pytest.raises(WeightSyncError, match="no way to receive weights"):
        await push_weights(GenerateOnly(), model, tokenizer, 5, tmp_path)


# ----- real engines ---------------------------------------------------------------------


async def test_hf_engine_capabilities_and_routes(tiny, tmp_path):
    model, tokenizer = tiny
    shared = HFEngine(model, tokenizer)
    try:
        assert capabilities(shared) == {GENERATE, GENERATE_TOKEN_IDS, SCORE_LOGPROBS, RECEIVE_WEIGHTS, CLOSE}
        require(shared, TRAINING, "train")
        prompt, completion = [1, 2, 3], [4, 5]
        assert await shared.score_logprobs(prompt, completion, 0.7) == shared.compute_logprobs(prompt, completion, 0.7)
        assert await push_weights(shared, model, tokenizer, 2, tmp_path) == "shared"
        assert shared.policy_version == 2
    finally:
        await shared.close()
    separate = HFEngine(copy.deepcopy(model), tokenizer)
    try:
        assert await push_weights(separate, model, tokenizer, 6, tmp_path) == "state_dict"
        assert separate.policy_version == 6
    finally:
        await separate.close()


def test_vllm_engine_declares_its_capabilities():
    # Declared on the class, so checkable without vLLM or a GPU (the constructor needs both).
    from agent_rl.engines.vllm import VLLMEngine

    engine = object.__new__(VLLMEngine)
    assert capabilities(engine) == {GENERATE, GENERATE_TOKEN_IDS, RECEIVE_WEIGHTS, CLOSE}


@pytest.fixture(scope="module")
def chat_server():
    """A real OpenAI-style chat server on a loopback port, in its own thread and loop."""
    seen: list[tuple[str, dict]] = []

    async def reply(request: web.Request) -> web.Response:
        seen.append((request.path, await request.json()))
        return web.json_response({"choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": REPLY}}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", reply)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield url, seen
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


class SubmitEnv:
    async def areset(self, *, seed=None, options=None):
        return "Fix the bug. Reply with one ```bash``` block.", {"task_id": "t"}

    async def astep(self, action: str):
        return "Submitted.", 1.0, True, False, {"grade": {"resolved": True}, "end_reason": "submitted"}


async def test_text_mode_server_evaluates_but_cannot_train(chat_server, tiny):
    url, seen = chat_server
    tokenizer = tiny[1]
    text = OpenAIEngine(url, "served", tokenizer=tokenizer, mode="text")
    tokens = OpenAIEngine(url, "served")
    try:
        assert capabilities(text) == {GENERATE, LOAD_CHECKPOINT, CLOSE}
        with pytest.raises(EngineCapabilityError, match="'openai \\(text mode\\)' cannot be used to train: "
                                                        "it lacks 'generate token ids'"):
            require(text, TRAINING, "train")
        require(text, EVALUATION, "evaluate")
        require(tokens, TRAINING, "train")  # a token-mode server trains through checkpoint reloads

        # The agent dispatches on the declared capability: the chat server gets the messages.
        seen.clear()
        traj = await run_episode(SubmitEnv(), text, tokenizer, AgentConfig(verify_rerender=False), task="t")
        assert traj.error is None and traj.text_mode and not traj.trainable
        [(path, body)] = seen
        assert path == "/v1/chat/completions" and body["messages"][-1]["role"] == "user"
        assert traj.messages[-1] == {"role": "assistant", "content": REPLY}
    finally:
        await text.close()
        await tokens.close()


async def test_agent_sends_token_ids_to_engines_that_do_not_want_messages(tiny):
    engine, tokenizer = GenerateOnly(), tiny[1]
    traj = await run_episode(SubmitEnv(), engine, tokenizer, AgentConfig(max_turns=1, verify_rerender=False), task="t")
    assert traj.error is None and engine.prompts and engine.prompts[0] == traj.prompt_ids


@pytest.mark.slow
def test_trainer_rejects_a_text_mode_engine_at_start_up(chat_server, tmp_path):
    from agent_rl.train.config import load_train_config
    from agent_rl.train.trainer import Trainer

    recipe = Path(__file__).resolve().parents[2] / "configs" / "smoke-cpu.yaml"
    config = load_train_config(recipe, [f"output_dir={tmp_path}", "engine.kind=openai", f"engine.base_url={chat_server[0]}",
                                        "engine.mode=text", "logging.tensorboard=false"])
    with pytest.raises(EngineCapabilityError, match="cannot be used to train: it lacks 'generate token ids'"):
        Trainer(config)
    assert not (tmp_path / "metrics.jsonl").exists()  # rejected before anything was logged


@pytest.mark.slow
def test_train_cli_names_the_missing_capability(chat_server, tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "agent_rl.cli", "train", "--config", str(repo / "configs" / "smoke-cpu.yaml"),
           f"output_dir={tmp_path}", "engine.kind=openai", f"engine.base_url={chat_server[0]}", "engine.mode=text",
           "logging.progress=false"]
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot train: engine 'openai (text mode)' cannot be used to train: it lacks 'generate token ids'" in done.stderr
    assert "Traceback" not in done.stderr
