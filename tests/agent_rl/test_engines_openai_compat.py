"""The `openai` engine against servers other than vLLM (issue 14).

Real loopback HTTP servers (aiohttp) that behave like the servers met in practice:

- a strict server (the OpenAI API's way): any field it does not know is an HTTP 400 naming it;
- a llama.cpp-like server (llama-cpp-python's FastAPI app): a request that fails its schema
  (a token-id prompt, `top_k=-1`) is an HTTP 500 whose message is the validation error, with
  the offending input echoed;
- a flaky server: 503, 429, a plain 500, a dropped connection and a 502, then an answer;
- a server that refuses every request (for the commands' exit status).

Beside them, the real thing: our own `agent-rl serve` in both modes (and behind a proxy that
hides who it is, so the start-up probe decides), and llama-cpp-python's own server (`slow`;
skips when `llama_cpp` is not installed, fails under CI=true when it is installed but broken).
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent_rl.engines.base import EngineError, SamplingParams
from agent_rl.engines.factory import EngineConfig, make_engine
from agent_rl.engines.openai_http import (
    BODY_LOG_CHARS,
    OpenAIEngine,
    ServerRefused,
    cap,
    is_validation_error,
    rejected_fields,
)
from serve_process import ServerProcess
from strictconfig import ConfigError

REPLY = "```bash\nls\n```"
MESSAGES = [{"role": "user", "content": "List the files."}]
GREEDY = SamplingParams(temperature=0, max_tokens=4)

STANDARD_CHAT = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
                 "n", "stream", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias",
                 "user", "response_format", "tools", "tool_choice"}
STANDARD_COMPLETIONS = {"model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "stream",
                        "logprobs", "echo", "suffix", "best_of", "user", "presence_penalty", "frequency_penalty",
                        "logit_bias"}


@pytest.fixture(scope="module")
def tokenizer():
    from agent_rl.engines.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


# ----- loopback servers ------------------------------------------------------------------


def _models(owned_by: str, model_id: str = "served"):
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": model_id, "object": "model", "owned_by": owned_by, "permissions": []}]})
    return models


def _chat_answer(text: str = REPLY) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "served",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def _text_answer(text: str = REPLY) -> dict[str, Any]:
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "served",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def _token_answer(ids: list[int]) -> dict[str, Any]:
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "served",
            "choices": [{"index": 0, "text": "x", "token_ids": ids, "finish_reason": "length",
                         "logprobs": {"tokens": [f"token_id:{i}" for i in ids],
                                      "token_logprobs": [-0.5] * len(ids)}}]}


def strict_app(seen: list[tuple[str, dict]]) -> web.Application:
    """Rejects any field it does not know (HTTP 400 naming it) and token-id prompts."""

    def check(body: dict, known: set[str]) -> web.Response | None:
        unknown = [k for k in body if k not in known]
        if unknown:
            return web.json_response({"error": {
                "message": f"Unrecognized request argument supplied: {', '.join(unknown)}",
                "type": "invalid_request_error", "param": unknown[0], "code": None}}, status=400)
        if "prompt" in body and not isinstance(body["prompt"], str):
            return web.json_response({"error": {
                "message": "Invalid type for 'prompt': expected a string, but got an array.",
                "type": "invalid_request_error", "param": "prompt", "code": None}}, status=400)
        return None

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, body))
        return check(body, STANDARD_CHAT) or web.json_response(_chat_answer())

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, body))
        return check(body, STANDARD_COMPLETIONS) or web.json_response(_text_answer())

    app = web.Application()
    app.router.add_get("/v1/models", _models("system"))
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    return app


def _fastapi_validation_message(errors: list[dict]) -> str:
    # What str(fastapi.exceptions.RequestValidationError) reads like: the input echoed.
    head = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''}:\n"
    return head + "".join(f"  {error!r}\n" for error in errors)


def llama_cpp_like_app(seen: list[tuple[str, dict]]) -> web.Application:
    """llama-cpp-python's server as it answers: /v1/models owned_by "me"; a body that fails the
    request schema is an HTTP 500 whose message is the validation error (input included);
    unknown fields are ignored."""

    def validate(body: dict, chat: bool) -> web.Response | None:
        errors: list[dict] = []
        if not chat:
            prompt = body.get("prompt", "")
            if not (isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt))):
                errors.append({"type": "string_type", "loc": ("body", "prompt", "str"),
                               "msg": "Input should be a valid string", "input": prompt})
                errors.append({"type": "string_type", "loc": ("body", "prompt", "list[str]", 0),
                               "msg": "Input should be a valid string", "input": prompt[0] if prompt else None})
        top_k = body.get("top_k", 40)
        if not isinstance(top_k, int) or top_k < 0:
            errors.append({"type": "greater_than_equal", "loc": ("body", "top_k"),
                           "msg": "Input should be greater than or equal to 0", "input": top_k, "ctx": {"ge": 0}})
        if not errors:
            return None
        return web.json_response({"error": {"message": _fastapi_validation_message(errors),
                                            "type": "internal_server_error", "param": None, "code": None}},
                                 status=500)

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, body))
        return validate(body, chat=True) or web.json_response(_chat_answer())

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, body))
        return validate(body, chat=False) or web.json_response(_text_answer())

    app = web.Application()
    app.router.add_get("/v1/models", _models("me"))
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    return app


def refusing_app(seen: list[tuple[str, dict]]) -> web.Application:
    """Refuses every generation request (as the OpenAI API does a sampling value a model does
    not support)."""

    async def refuse(request: web.Request) -> web.Response:
        seen.append((request.path, await request.json()))
        return web.json_response({"error": {
            "message": "Unsupported value: 'temperature' does not support 1.0 with this model. "
                       "Only the default (0.7) value is supported.",
            "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}}, status=400)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", refuse)
    app.router.add_post("/v1/completions", refuse)
    return app


@asynccontextmanager
async def serving(app: web.Application):
    """`app` on a free loopback port in this event loop; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextmanager
def serving_in_a_thread(app: web.Application):
    """`app` on its own event loop in a thread, for code that runs `asyncio.run` itself (the CLI)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


# ----- a strict server: standard fields only ---------------------------------------------


async def test_text_mode_sends_a_strict_server_only_standard_fields(tokenizer):
    seen: list[tuple[str, dict]] = []
    stop_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    sampling = SamplingParams(temperature=0.7, max_tokens=8, seed=3, stop=("DONE",), stop_token_ids=(stop_id,))
    async with serving(strict_app(seen)) as url:
        engine = OpenAIEngine(url, "served", tokenizer=tokenizer, mode="text", server="auto")
        try:
            via_chat = await engine.generate([1, 2, 3], sampling, messages=MESSAGES)
            via_text = await engine.generate(tokenizer.encode("Hello"), sampling)
        finally:
            await engine.close()
    assert engine.server_kind == "generic" and not engine.extensions
    assert via_chat.text == via_text.text == REPLY and via_chat.text_mode and via_text.text_mode
    (chat_path, chat_body), (text_path, text_body) = seen
    assert chat_path == "/v1/chat/completions" and set(chat_body) <= STANDARD_CHAT
    assert text_path == "/v1/completions" and set(text_body) <= STANDARD_COMPLETIONS
    assert chat_body["stop"] == ["DONE", "<|im_end|>"]  # stop_token_ids as a standard stop string
    assert chat_body["temperature"] == 0.7 and chat_body["seed"] == 3 and chat_body["max_tokens"] == 8


async def test_extensions_to_a_strict_server_fail_fast_naming_the_field(tokenizer):
    seen: list[tuple[str, dict]] = []
    async with serving(strict_app(seen)) as url:
        # Told it is vLLM: the extensions go out, the server refuses them. A retry would wait
        # backoff_s (jittered, ≥ 2.5 s) first; there must be none.
        engine = OpenAIEngine(url, "served", tokenizer=tokenizer, mode="text", server="vllm",
                              backoff_s=5.0, max_retries=5)
        started = time.monotonic()
        try:
            with pytest.raises(ServerRefused) as refused:
                await engine.generate([1, 2], GREEDY, messages=MESSAGES)
        finally:
            await engine.close()
    assert time.monotonic() - started < 2.0 and len(seen) == 1
    exc = refused.value
    assert exc.status == 400 and set(exc.fields) == {"top_k", "min_p"}
    assert "engine.server=generic" in str(exc) and "engine.server is 'vllm'" in str(exc)


async def test_token_mode_against_a_strict_server_stops_at_start_up(tokenizer):
    seen: list[tuple[str, dict]] = []
    async with serving(strict_app(seen)) as url:
        engine = OpenAIEngine(url, "served", server="auto", max_retries=5, backoff_s=5.0)
        try:
            with pytest.raises(ServerRefused, match="owned_by 'system'.*engine.mode=text") as first:
                await engine.connect()
            assert len(seen) == 1 and isinstance(seen[0][1]["prompt"], list)  # the one probe
            with pytest.raises(ServerRefused) as again:  # every request: the same verdict, no traffic
                await engine.generate([1, 2, 3], GREEDY)
            assert again.value is first.value and len(seen) == 1
        finally:
            await engine.close()


async def test_extra_body_goes_out_as_given_and_a_refusal_of_it_says_so(tokenizer):
    seen: list[tuple[str, dict]] = []
    async with serving(strict_app(seen)) as url:
        engine = make_engine(EngineConfig(kind="openai", base_url=url, model="served", mode="text",
                                          extra_body={"repeat_penalty": 1.0}), tokenizer=tokenizer)
        try:
            with pytest.raises(ServerRefused, match="remove repeat_penalty from engine.extra_body"):
                await engine.generate([1, 2], GREEDY, messages=MESSAGES)
        finally:
            await engine.close()
    assert seen[0][1]["repeat_penalty"] == 1.0


async def test_a_wrong_api_key_is_named_at_start_up():
    async def denied(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "Invalid API key", "type": "invalid_request_error"}},
                                 status=401)

    app = web.Application()
    app.router.add_get("/v1/models", denied)
    async with serving(app) as url:
        engine = OpenAIEngine(url, "served", server="auto", api_key="wrong", backoff_s=5.0)
        try:
            with pytest.raises(ServerRefused, match="HTTP 401.*check engine.api_key"):
                await engine.generate([1, 2], GREEDY)
        finally:
            await engine.close()


def test_config_refuses_token_mode_on_a_generic_server():
    assert EngineConfig().server == "auto"
    with pytest.raises(ConfigError, match="mode=text"):
        EngineConfig(kind="openai", base_url="http://127.0.0.1:9", server="generic")
    EngineConfig(kind="openai", base_url="http://127.0.0.1:9", server="generic", mode="text")
    with pytest.raises(ValueError, match="use mode='text'"):
        OpenAIEngine("http://127.0.0.1:9", "m", server="generic")
    with pytest.raises(ValueError, match="server must be"):
        OpenAIEngine("http://127.0.0.1:9", "m", server="tgi")  # type: ignore[arg-type]


# ----- a llama.cpp-like server: HTTP 500 for a schema violation --------------------------


async def test_a_500_validation_error_is_not_retried_and_its_echo_is_capped(caplog):
    seen: list[tuple[str, dict]] = []
    long_prompt = list(range(100, 4100))  # echoed back in the error: ~25 kB
    caplog.set_level(logging.DEBUG)
    async with serving(llama_cpp_like_app(seen)) as url:
        engine = OpenAIEngine(url, "served", server="agent-rl", backoff_s=5.0, max_retries=5)
        started = time.monotonic()
        try:
            with pytest.raises(ServerRefused) as refused:
                await engine.generate(long_prompt, GREEDY)
        finally:
            await engine.close()
    assert time.monotonic() - started < 2.0 and len(seen) == 1
    exc = refused.value
    assert exc.status == 500 and exc.fields == ("prompt", "top_k")
    message = str(exc)
    assert "token mode cannot use it" in message and "engine.mode=text" in message
    assert "engine.server=auto or generic" in message
    assert len(message) < 2 * BODY_LOG_CHARS + 600, len(message)
    assert all(len(record.getMessage()) < 2 * BODY_LOG_CHARS for record in caplog.records)


async def test_auto_against_a_llama_cpp_like_server(tokenizer):
    seen: list[tuple[str, dict]] = []
    async with serving(llama_cpp_like_app(seen)) as url:
        tokens = OpenAIEngine(url, "served", server="auto", backoff_s=5.0)
        text = OpenAIEngine(url, "served", tokenizer=tokenizer, mode="text", server="auto")
        try:
            with pytest.raises(ServerRefused, match="owned_by 'me'.*engine.mode=text"):
                await tokens.generate([1, 2, 3], GREEDY)
            assert len(seen) == 1  # the probe only, not retried
            seen.clear()
            gen = await text.generate([1, 2, 3], GREEDY, messages=MESSAGES)
        finally:
            await tokens.close()
            await text.close()
    assert gen.text == REPLY and gen.text_mode and text.server_kind == "generic"
    [(path, body)] = seen
    assert path == "/v1/chat/completions" and not {"top_k", "min_p"} & set(body)


# ----- a flaky server: transient failures keep the bounded retry -------------------------


async def test_transient_failures_are_retried_then_answered():
    script = [(503, "busy"), (429, "rate limited"), (500, "CUDA error: an illegal memory access"),
              ("drop", ""), (502, "Bad Gateway")]
    hits: list[Any] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        await request.json()
        hits.append(time.monotonic())
        if len(hits) <= len(script):
            status, message = script[len(hits) - 1]
            if status == "drop":  # the connection goes away mid-request
                request.transport.abort()
                return web.Response()
            return web.json_response({"error": {"message": message}}, status=status)
        return web.json_response(_token_answer([7, 8]))

    app = web.Application()
    app.router.add_post("/v1/completions", flaky)
    async with serving(app) as url:
        engine = OpenAIEngine(url, "served", backoff_s=0.01, max_backoff_s=0.05, max_retries=5)
        try:
            gen = await engine.generate([1, 2, 3], GREEDY)
            assert gen.token_ids == [7, 8] and len(hits) == len(script) + 1
            hits.clear()
            tight = OpenAIEngine(url, "served", backoff_s=0.01, max_retries=1)
            with pytest.raises(EngineError, match="after 2 attempt") as exc:
                await tight.generate([1, 2, 3], GREEDY)
            assert not isinstance(exc.value, ServerRefused)
            await tight.close()
        finally:
            await engine.close()


async def test_a_502_with_a_validation_body_is_not_retried():
    hits: list[float] = []

    async def gateway(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        return web.json_response({"detail": [{"loc": ["body", "stop_token_ids"], "msg": "extra fields not permitted",
                                              "type": "extra_forbidden"}]}, status=502)

    app = web.Application()
    app.router.add_post("/v1/completions", gateway)
    async with serving(app) as url:
        engine = OpenAIEngine(url, "served", backoff_s=5.0, max_retries=5)
        try:
            with pytest.raises(ServerRefused) as refused:
                await engine.generate([1, 2], SamplingParams(max_tokens=2, stop_token_ids=(5,)))
        finally:
            await engine.close()
    assert len(hits) == 1 and refused.value.fields == ("stop_token_ids",)


def test_error_helpers():
    assert cap("x" * 10) == "x" * 10
    capped = cap("y" * (BODY_LOG_CHARS + 1234))
    assert capped.startswith("y" * BODY_LOG_CHARS) and capped.endswith("[1234 more chars]")
    assert is_validation_error("1 validation error:\n  {'loc': ('body', 'top_k')}")
    assert not is_validation_error("CUDA out of memory") and not is_validation_error("busy")
    payload = {"model": "m", "prompt": [1], "top_k": -1, "stop": ["x"]}
    assert rejected_fields("{'type': 'x', 'loc': ('body', 'top_k'), 'msg': 'no'}", payload) == ("top_k",)
    assert rejected_fields("Unrecognized request argument supplied: top_k", payload) == ("top_k",)
    assert rejected_fields("The model `m` does not exist.", payload) == ("model",)
    assert rejected_fields("busy", payload) == ()
    prose = "Unsupported value: 'temperature' does not support 1.0 with this model."
    assert rejected_fields(prose, {"model": "m", "temperature": 1.0}, param="temperature") == ("temperature",)


# ----- the real thing: our own `agent-rl serve` ------------------------------------------

@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("serve") / "serve.log", batch_wait_ms=5)
    yield proc
    proc.stop()


def chat_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                              add_generation_prompt=True, tokenize=True))


async def test_our_serve_in_token_and_text_mode(serve, tokenizer):
    prompt = chat_ids(tokenizer, "Name a fruit.")
    messages = [{"role": "user", "content": "Name a fruit."}]
    tokens = make_engine(EngineConfig(kind="openai", base_url=serve.url, model="smollm2-135m"))
    text = make_engine(EngineConfig(kind="openai", base_url=serve.url, model="smollm2-135m", mode="text"),
                       tokenizer=tokenizer)
    generic = make_engine(EngineConfig(kind="openai", base_url=serve.url, model="smollm2-135m", mode="text",
                                       server="generic"), tokenizer=tokenizer)
    try:
        by_ids = await tokens.generate(prompt, GREEDY)
        by_chat = await text.generate(prompt, GREEDY, messages=messages)
        standard_only = await generic.generate(prompt, GREEDY, messages=messages)
    finally:
        for engine in (tokens, text, generic):
            await engine.close()
    assert tokens.server_kind == text.server_kind == "agent-rl" and tokens.extensions and text.extensions
    assert len(by_ids.token_ids) == len(by_ids.logprobs) == 4 and not by_ids.text_mode
    assert all(lp <= 0 for lp in by_ids.logprobs)
    assert by_chat.text_mode and standard_only.text_mode and not generic.extensions
    # Same template, same greedy tokens, whichever dialect carried the request.
    assert by_chat.text == standard_only.text == by_ids.text


async def test_an_unnamed_server_that_takes_token_ids_passes_the_probe(serve, tokenizer):
    """A proxy in front of `agent-rl serve` that hides who it is: the token-id probe decides."""
    upstream = serve.url.removesuffix("/v1")
    probes: list[dict] = []

    async def forward(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("max_tokens") == 1:
            probes.append(body)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{upstream}{request.path}", json=body) as resp:
                return web.json_response(await resp.json(), status=resp.status)

    app = web.Application()
    app.router.add_get("/v1/models", _models("someone", "smollm2-135m"))
    app.router.add_post("/v1/completions", forward)
    prompt = chat_ids(tokenizer, "Name a fruit.")
    async with serving(app) as url:
        proxied = OpenAIEngine(url, "smollm2-135m", server="auto")
        direct = OpenAIEngine(serve.url, "smollm2-135m", server="agent-rl")
        try:
            through = await proxied.generate(prompt, GREEDY)
            reference = await direct.generate(prompt, GREEDY)
            with pytest.raises(EngineError, match="set engine.server to vllm or agent-rl"):
                await proxied.load_checkpoint("/nonexistent")
        finally:
            await proxied.close()
            await direct.close()
    assert len(probes) == 1 and isinstance(probes[0]["prompt"], list)
    assert proxied.server_kind == "generic" and proxied.extensions
    assert through.token_ids == reference.token_ids


# ----- the commands: exit status ---------------------------------------------------------


def test_eval_in_token_mode_against_a_server_without_token_ids_stops_before_any_sample(tmp_path, capsys):
    from agent_rl.cli import main

    seen: list[tuple[str, dict]] = []
    with serving_in_a_thread(llama_cpp_like_app(seen)) as url:
        code = main(["eval", "--engine", "openai", "--base-url", url, "--model", "served",
                     "--tasks", "builtin:semvertools:easy", "--out", str(tmp_path / "e"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "engine.mode=text" in err and "owned_by 'me'" in err, err
    assert len(err) < 2000 and len(seen) == 1
    assert not (tmp_path / "e" / "results.jsonl").exists()


@pytest.fixture(scope="module")
def one_task(tmp_path_factory) -> str:
    from envs.tasks import load_tasks

    task = load_tasks("builtin:semvertools:easy")[0]
    path = tmp_path_factory.mktemp("tasks") / "one.jsonl"
    path.write_text(json.dumps(task.to_dict()) + "\n")
    return str(path)


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_eval_and_rollout_exit_non_zero_when_every_sample_errored(one_task, tmp_path, capsys):
    from agent_rl.cli import main

    seen: list[tuple[str, dict]] = []
    with serving_in_a_thread(refusing_app(seen)) as url:
        eval_code = main(["eval", "--engine", "openai", "--base-url", url, "--model", "served",
                          "--engine-opt", "mode=text", "--engine-opt", "tokenizer=smollm2-135m",
                          "--tasks", one_task, "--samples", "2", "--max-turns", "1",
                          "--out", str(tmp_path / "eval"), "--no-progress"])
        eval_err = capsys.readouterr().err
        eval_requests = len(seen)
        rollout_code = main(["rollout", "--engine", "openai", "--base-url", url, "--tasks", one_task,
                             "--max-turns", "1", "--out", str(tmp_path / "rollout"), "--no-progress",
                             "engine.mode=text", "engine.model=served"])
        rollout_err = capsys.readouterr().err
    assert eval_code == 1, eval_err
    assert "eval: every sample errored (2 of 2): 2× ServerRefused: POST /v1/chat/completions: HTTP 400" in eval_err
    assert "(it names temperature)" in eval_err and "change agent.sampling.temperature" in eval_err
    assert eval_requests == 2  # one per sample: a refusal is not retried
    rows = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("ServerRefused" in row["error"] for row in rows)
    assert all(len(row["error"]) < 2 * BODY_LOG_CHARS + 600 for row in rows)
    assert (tmp_path / "eval" / "report.json").exists()  # the report is still written
    assert rollout_code == 1, rollout_err
    assert "agent-rl rollout: every episode errored (1 of 1): 1× ServerRefused" in rollout_err


# ----- a real third-party server: llama-cpp-python ---------------------------------------


def _llama_cpp_server_or_skip() -> None:
    """Skip when llama-cpp-python is not installed; when it is but cannot start, fail under
    CI=true (a broken install must not pass as a skip there)."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] is not installed (PyPI ships only its sdist: a long compile)")
    try:
        importlib.import_module("llama_cpp.server.app")  # the [server] extra: fastapi, uvicorn, sse-starlette, …
    except Exception as exc:  # an import of a compiled library fails in many ways
        why = f"llama_cpp is installed but its server does not import: {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_cpp_server(tmp_path_factory):
    _llama_cpp_server_or_skip()
    from agent_rl.engines.models import gguf_path

    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-cpp") / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path("smollm2-135m")),
                             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                             "--n_ctx", "4096", "--verbose", "false"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"llama_cpp.server exited: {log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"llama_cpp.server did not answer: {log_path.read_text()[-2000:]}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
async def test_real_llama_cpp_python_server_in_both_modes(llama_cpp_server, tokenizer):
    url = llama_cpp_server
    prompt = chat_ids(tokenizer, "Name a fruit.")
    # Token mode: refused at start-up, once, naming mode=text.
    tokens = make_engine(EngineConfig(kind="openai", base_url=url, model="smollm2", max_retries=5))
    started = time.monotonic()
    try:
        with pytest.raises(ServerRefused, match="engine.mode=text") as refused:
            await tokens.generate(prompt, GREEDY)
    finally:
        await tokens.close()
    assert time.monotonic() - started < 30 and len(str(refused.value)) < 2000
    # Told it is vLLM anyway: its HTTP 500 validation error is not retried either.
    wrong = OpenAIEngine(url, "smollm2", server="vllm", backoff_s=5.0, max_retries=5)
    started = time.monotonic()
    try:
        with pytest.raises(ServerRefused, match="engine.mode=text") as refused:
            await wrong.generate(prompt, GREEDY)
    finally:
        await wrong.close()
    assert refused.value.status == 500 and "prompt" in refused.value.fields
    assert time.monotonic() - started < 10  # no backoff (≥ 2.5 s each) happened
    # Text mode: standard fields only, through the chat template and as a text prompt.
    text = make_engine(EngineConfig(kind="openai", base_url=url, model="smollm2", mode="text",
                                    extra_body={"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}),
                       tokenizer=tokenizer)
    try:
        via_chat = await text.generate(prompt, SamplingParams(temperature=0, max_tokens=8),
                                       messages=[{"role": "user", "content": "Name a fruit."}])
        via_text = await text.generate(prompt, SamplingParams(temperature=0, max_tokens=8))
    finally:
        await text.close()
    assert text.server_kind == "generic" and not text.extensions
    for gen in (via_chat, via_text):
        assert gen.text_mode and gen.text and gen.token_ids


# ----- two event loops on one engine (async RL: the producer's and the trainer's) ----------


def test_each_loop_keeps_its_own_session_and_close_closes_them_all(tokenizer):
    """The async producer generates from its loop while the trainer pushes weights from its
    own: calls alternating between them reuse one pooled connection per loop (they used to
    swap sessions on every switch, dropping the other loop's unclosed), and close() from the
    trainer's loop also closes the producer's session, in the producer's loop."""
    peers: list[int] = []

    def app() -> web.Application:
        app = strict_app([])

        @web.middleware
        async def note_peer(request, handler):
            peers.append(request.transport.get_extra_info("peername")[1])
            return await handler(request)

        app.middlewares.append(note_peer)
        return app

    sampling = SamplingParams(temperature=0.7, max_tokens=4)
    producer = asyncio.new_event_loop()
    thread = threading.Thread(target=producer.run_forever, daemon=True)
    thread.start()
    trainer = asyncio.new_event_loop()
    try:
        with serving_in_a_thread(app()) as url:
            engine = OpenAIEngine(url, "served", tokenizer=tokenizer, mode="text", server="generic")
            for _ in range(3):
                asyncio.run_coroutine_threadsafe(engine.generate([1, 2], sampling), producer).result(timeout=30)
                trainer.run_until_complete(engine.generate([1, 2], sampling))
            sessions = list(engine._sessions.values())
            assert len(sessions) == 2 and not any(s.closed for s in sessions)
            # three calls from each loop, each loop on one connection of its own
            assert len(peers) == 6 and len(set(peers[0::2])) == 1 and len(set(peers[1::2])) == 1
            assert peers[0] != peers[1]
            trainer.run_until_complete(engine.close())
            assert all(s.closed for s in sessions) and not engine._sessions
    finally:
        producer.call_soon_threadsafe(producer.stop)
        thread.join(timeout=10)
        producer.close()
        trainer.close()
