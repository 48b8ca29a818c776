"""`agent-rl serve` as a real subprocess on loopback, and the `openai` engine against it."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import aiohttp
import pytest
from aiohttp import web

from agent_rl.engines.base import EngineError, SamplingParams
from agent_rl.engines.hf import HFEngine
from agent_rl.engines.openai_http import OpenAIEngine, parse_token_choice
from agent_rl.engines.models import load_model, resolve_checkpoint

from serve_process import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("serve") / "serve.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def local():
    model, tokenizer = load_model("smollm2-135m")
    engine = HFEngine(model, tokenizer)
    yield engine
    engine.close_sync()


def chat(tokenizer, text: str) -> list[int]:
    return list(tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    ))


async def test_health_models_and_bad_requests(server):
    base = server.url.removesuffix("/v1")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with http.get(f"{server.url}/models") as resp:
            assert (await resp.json())["data"][0]["id"] == "smollm2-135m"
        async with http.post(f"{server.url}/completions", data="not json") as resp:
            assert resp.status == 400 and "JSON" in (await resp.json())["error"]["message"]
        async with http.post(f"{server.url}/completions", json={"prompt": [1, 2], "top_k": 20}) as resp:
            assert resp.status == 400 and "top_k" in (await resp.json())["error"]["message"]


async def test_openai_tokens_match_hf_greedy(server, local):
    prompt = chat(local.tokenizer, "Name a fruit.")
    greedy = SamplingParams(temperature=0, max_tokens=6)
    remote = OpenAIEngine(server.url, "smollm2-135m")
    try:
        over_http = await remote.generate(prompt, greedy)
    finally:
        await remote.close()
    in_process = await local.generate(prompt, greedy)
    assert over_http.token_ids == in_process.token_ids
    assert max(abs(a - b) for a, b in zip(over_http.logprobs, in_process.logprobs)) < 1e-4
    assert over_http.finish_reason == in_process.finish_reason and not over_http.text_mode
    assert over_http.text == in_process.text


async def test_text_prompt_and_chat_over_http(server, local):
    async with aiohttp.ClientSession() as http:
        text = local.tokenizer.decode(chat(local.tokenizer, "Name a fruit."))
        async with http.post(f"{server.url}/completions", json={
            "prompt": text, "max_tokens": 3, "temperature": 0, "logprobs": 0,
            "return_token_ids": True,
        }) as resp:
            body = await resp.json()
    choice = body["choices"][0]
    ids, logprobs = parse_token_choice(choice)
    assert choice["prompt_token_ids"] == chat(local.tokenizer, "Name a fruit.")  # no extra BOS
    assert len(ids) == len(logprobs) == body["usage"]["completion_tokens"] == 3


async def test_context_overflow_is_a_length_finish(server):
    remote = OpenAIEngine(server.url, "smollm2-135m", max_retries=0)
    try:
        gen = await remote.generate([42] * 8190, SamplingParams(max_tokens=16))
    finally:
        await remote.close()
    assert gen.finish_reason == "length" and gen.token_ids == [] and gen.logprobs == []
    assert "maximum context length" in gen.info["error"]


async def test_text_mode_sets_text_mode(server, local):
    remote = OpenAIEngine(server.url, "smollm2-135m", tokenizer=local.tokenizer, mode="text")
    sampling = SamplingParams(temperature=0, max_tokens=4)
    try:
        via_chat = await remote.generate(chat(local.tokenizer, "Hi!"), sampling,
                                         messages=[{"role": "user", "content": "Hi!"}])
        via_text = await remote.generate(chat(local.tokenizer, "Hi!"), sampling)
    finally:
        await remote.close()
    for gen in (via_chat, via_text):
        assert gen.text_mode and gen.text
        assert gen.token_ids == local.tokenizer.encode(gen.text, add_special_tokens=False)
    assert via_chat.text == via_text.text  # same template, same greedy tokens


async def test_retries_on_503_then_succeeds(server):
    """A real loopback proxy that answers 503 twice, then forwards to the real server."""
    hits = []

    async def flaky(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        if len(hits) <= 2:
            return web.json_response({"error": {"message": "busy"}}, status=503)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/completions", json=await request.json()) as resp:
                return web.json_response(await resp.json(), status=resp.status)

    app = web.Application()
    app.router.add_post("/v1/completions", flaky)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    remote = OpenAIEngine(f"http://127.0.0.1:{port}/v1", "smollm2-135m", backoff_s=0.05, max_retries=3)
    try:
        gen = await remote.generate([1, 4093, 198], SamplingParams(temperature=0, max_tokens=2))
        assert len(hits) == 3 and len(gen.token_ids) == 2
        hits.clear()
        stubborn = OpenAIEngine(f"http://127.0.0.1:{port}", "m", backoff_s=0.01, max_retries=1)
        with pytest.raises(EngineError, match="503"):
            await stubborn.generate([1, 2], SamplingParams(max_tokens=1))
        await stubborn.close()
    finally:
        await remote.close()
        await runner.cleanup()


@pytest.mark.slow
async def test_server_killed_mid_request_raises_engine_error(tmp_path):
    doomed = ServerProcess(tmp_path / "doomed.log")
    remote = OpenAIEngine(doomed.url, "smollm2-135m", max_retries=2, backoff_s=0.1, timeout_s=60)
    try:
        # A counting prompt keeps the model going well past the kill.
        long_request = asyncio.ensure_future(remote.generate(
            list(range(28, 60)), SamplingParams(temperature=0, max_tokens=4000)))
        await asyncio.sleep(2.0)
        assert not long_request.done()
        doomed.proc.kill()
        started = time.monotonic()
        with pytest.raises(EngineError):
            await asyncio.wait_for(long_request, timeout=60)
        assert time.monotonic() - started < 30
    finally:
        await remote.close()
        doomed.stop()


@pytest.mark.slow
async def test_load_checkpoint_lora_then_full(server, local, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    base, tokenizer = load_model("smollm2-135m")
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    merged = lora.merge_and_unload()

    prompt = chat(tokenizer, "Name a fruit.")
    remote = OpenAIEngine(server.url, "smollm2-135m", max_retries=0)
    try:
        assert await remote.load_checkpoint(str(tmp_path / "adapter")) == 1
        gen = await remote.generate(prompt, SamplingParams(temperature=0, max_tokens=4))
        assert gen.info["policy_version"] == 1
        ids = torch.tensor([prompt + gen.token_ids])
        with torch.no_grad():
            logits = merged(input_ids=ids).logits[0, len(prompt) - 1 : -1]
        expected = torch.log_softmax(logits.float(), -1)
        expected = [float(expected[i, t]) for i, t in enumerate(gen.token_ids)]
        assert max(abs(a - b) for a, b in zip(gen.logprobs, expected)) < 1e-4

        # Back to the base weights through the full-checkpoint path.
        assert await remote.load_checkpoint(str(resolve_checkpoint("smollm2-135m")), version=7) == 7
        again = await remote.generate(prompt, SamplingParams(temperature=0, max_tokens=4))
        reference = await local.generate(prompt, SamplingParams(temperature=0, max_tokens=4))
        assert again.token_ids == reference.token_ids

        with pytest.raises(EngineError, match="neither an HF checkpoint"):
            await remote.load_checkpoint(str(tmp_path))
    finally:
        await remote.close()


def test_sigterm_shuts_down_gracefully(server):
    # Last in the module: it ends the shared server.
    assert server.stop() == 0
    assert server.lines.get(timeout=5).startswith("agent-rl serve: shutting down")


# ----- response parsing, without a server ---------------------------------------------------


def test_parse_token_choice_reads_both_vllm_dialects():
    new_style = {"token_ids": [5, 6], "logprobs": {"tokens": ["a", "b"], "token_logprobs": [-0.1, -0.2]}}
    old_style = {"logprobs": {"tokens": ["token_id:5", "token_id:6"], "token_logprobs": [-0.1, -0.2]}}
    assert parse_token_choice(new_style) == parse_token_choice(old_style) == ([5, 6], [-0.1, -0.2])
    with pytest.raises(EngineError, match="no token ids"):
        parse_token_choice({"text": "hi", "logprobs": {"tokens": ["hi"], "token_logprobs": [-1.0]}})
    with pytest.raises(EngineError, match="logprobs"):
        parse_token_choice({"token_ids": [1, 2], "logprobs": None})


def test_error_bodies_and_context_detection():
    from agent_rl.engines.openai_http import error_message, is_context_error

    vllm_new = {"error": {"message": "This model's maximum context length is 8 tokens.", "code": 400}}
    vllm_old = {"object": "error", "message": "This model's maximum context length is 8 tokens."}
    assert error_message(vllm_new, "x") == error_message(vllm_old, "x")
    assert is_context_error(error_message(vllm_new, "x"))
    assert not is_context_error("top_k is not supported") and error_message(None, "HTTP 500") == "HTTP 500"


def test_serve_rejects_an_unknown_model(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "agent_rl.cli", "serve", "--model", str(tmp_path / "nope"), "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and "neither a known alias" in done.stderr
