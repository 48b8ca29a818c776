"""A small OpenAI-compatible HTTP server over HFEngine (`agent-rl serve`).

It speaks the subset of vLLM's dialect the `openai` engine uses, so the same client code
talks to this server on a laptop and to vLLM on a cluster:

- `GET /health`, `GET /v1/models`
- `POST /v1/completions`: `prompt` as text or token ids; `logprobs`, `return_token_ids`
  (choice carries `token_ids`), `return_tokens_as_token_ids` ("token_id:N" strings)
- `POST /v1/chat/completions`: the chat template is applied here
- `POST /v1/load_checkpoint {"path": DIR}`: swap in weights saved by the trainer (a full HF
  checkpoint or a LoRA adapter over the served base model); returns the new policy version

A prompt plus max_tokens beyond the context window is rejected with HTTP 400 and vLLM's
wording ("This model's maximum context length is ..."), which clients map to a "length" finish.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent_rl.engines.base import Generation, SamplingParams
from agent_rl.engines.hf import HFEngine

log = logging.getLogger(__name__)

@dataclass
class ServerState:
    model_name: str
    base_spec: str  # what LoRA adapters are applied on top of
    reload_lock: asyncio.Lock


ENGINE_KEY = web.AppKey("engine", HFEngine)
STATE_KEY = web.AppKey("state", ServerState)


class RequestError(ValueError):
    """The request is malformed; becomes HTTP 400 with the message."""


def error_response(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
    # vLLM's shape: {"error": {...}}; clients also accept the older flat {"message": ...}.
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status)


def context_error(window: int, prompt_tokens: int, max_tokens: int) -> str:
    return (
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in "
        "the completion). Please reduce the length of the messages or completion."
    )


def parse_sampling(body: dict[str, Any], default_max_tokens: int) -> SamplingParams:
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported")
    if body.get("stream"):
        raise RequestError("stream=true is not supported")
    if body.get("top_k") not in (None, -1, 0):
        raise RequestError("top_k is not supported (only -1/0: off)")
    if body.get("min_p") not in (None, 0, 0.0):
        raise RequestError("min_p is not supported (only 0: off)")
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    try:
        return SamplingParams(
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            max_tokens=int(body.get("max_tokens") or default_max_tokens),
            stop=tuple(str(s) for s in stop),
            stop_token_ids=tuple(int(t) for t in body.get("stop_token_ids") or ()),
            seed=None if body.get("seed") is None else int(body["seed"]),
        )
    except (TypeError, ValueError) as exc:
        raise RequestError(f"bad sampling parameter: {exc}") from exc


def parse_prompt(prompt: Any, tokenizer: Any) -> list[int]:
    """`prompt` as a string, a list of ids, or a one-element batch of either."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise RequestError("prompt is empty")
        # The chat template already carries its special tokens; adding BOS would double it.
        return tokenizer.encode(prompt, add_special_tokens=False)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return prompt
    raise RequestError("prompt must be a non-empty string or list of token ids (one prompt per request)")


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except Exception as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


def check_context(engine: HFEngine, prompt_ids: list[int], sampling: SamplingParams) -> None:
    window = engine.context_window
    if window is not None and len(prompt_ids) + sampling.max_tokens > window:
        raise RequestError(context_error(window, len(prompt_ids), sampling.max_tokens))


def usage(prompt_ids: list[int], generation: Generation) -> dict[str, int]:
    n_prompt, n_out = len(prompt_ids), len(generation.token_ids)
    return {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}


def logprobs_block(engine: HFEngine, generation: Generation, as_ids: bool) -> dict[str, Any]:
    if as_ids:
        tokens = [f"token_id:{t}" for t in generation.token_ids]
    else:
        tokens = engine.tokenizer.convert_ids_to_tokens(generation.token_ids)
    return {"tokens": tokens, "token_logprobs": generation.logprobs, "top_logprobs": None,
            "text_offset": []}


def base_choice(generation: Generation) -> dict[str, Any]:
    return {"index": 0, "finish_reason": generation.finish_reason,
            "stop_reason": generation.info.get("stop_reason"), "logprobs": None}


def reply(kind: str, state: ServerState, choice: dict[str, Any], prompt_ids: list[int],
          generation: Generation) -> web.Response:
    prefix = "cmpl" if kind == "text_completion" else "chatcmpl"
    return web.json_response({
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": state.model_name,
        "choices": [choice],
        "usage": usage(prompt_ids, generation),
        "policy_version": generation.info.get("policy_version"),
    })


async def run_generation(engine: HFEngine, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
    try:
        return await engine.generate(prompt_ids, sampling)
    except ValueError as exc:  # bad token ids and the like
        raise RequestError(str(exc)) from exc


async def completions(request: web.Request) -> web.Response:
    engine, state = request.app[ENGINE_KEY], request.app[STATE_KEY]
    body = await read_json(request)
    prompt_ids = parse_prompt(body.get("prompt"), engine.tokenizer)
    sampling = parse_sampling(body, default_max_tokens=16)
    check_context(engine, prompt_ids, sampling)
    generation = await run_generation(engine, prompt_ids, sampling)
    choice = base_choice(generation) | {"text": generation.text or ""}
    if body.get("logprobs") is not None:
        choice["logprobs"] = logprobs_block(engine, generation, bool(body.get("return_tokens_as_token_ids")))
    if body.get("return_token_ids"):
        choice["token_ids"] = generation.token_ids
        choice["prompt_token_ids"] = prompt_ids
    return reply("text_completion", state, choice, prompt_ids, generation)


async def chat_completions(request: web.Request) -> web.Response:
    engine, state = request.app[ENGINE_KEY], request.app[STATE_KEY]
    body = await read_json(request)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects")
    try:
        prompt_ids = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    except Exception as exc:
        raise RequestError(f"cannot apply the chat template to messages: {exc}") from exc
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):  # newer transformers
        prompt_ids = prompt_ids["input_ids"]
    body = dict(body)
    if body.get("max_completion_tokens") and not body.get("max_tokens"):
        body["max_tokens"] = body["max_completion_tokens"]
    for key in ("messages", "max_completion_tokens"):
        body.pop(key, None)
    room = engine.context_window - len(prompt_ids) if engine.context_window else 512
    sampling = parse_sampling(body, default_max_tokens=max(1, room))
    check_context(engine, prompt_ids, sampling)
    generation = await run_generation(engine, list(prompt_ids), sampling)
    choice = base_choice(generation) | {"message": {"role": "assistant", "content": generation.text or ""}}
    if body.get("logprobs"):
        tokens = engine.tokenizer.convert_ids_to_tokens(generation.token_ids)
        choice["logprobs"] = {"content": [
            {"token": tok, "logprob": lp} for tok, lp in zip(tokens, generation.logprobs)
        ]}
    if body.get("return_token_ids"):
        choice["token_ids"] = generation.token_ids
    return reply("chat.completion", state, choice, prompt_ids, generation)


async def load_checkpoint(request: web.Request) -> web.Response:
    from agent_rl.engines.models import checkpoint_state_dict

    engine, state = request.app[ENGINE_KEY], request.app[STATE_KEY]
    body = await read_json(request)
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise RequestError('body must be {"path": "<checkpoint or LoRA adapter dir>"}')
    version = body.get("version")
    async with state.reload_lock:
        try:
            weights = await asyncio.to_thread(checkpoint_state_dict, path, base=state.base_spec)
        except (OSError, ValueError) as exc:
            raise RequestError(f"cannot load checkpoint {path}: {exc}") from exc
        try:
            new_version = await engine.load_weights(weights, version)
        except RuntimeError as exc:  # shape/key mismatch from load_state_dict
            raise RequestError(f"checkpoint {path} does not fit the served model: {exc}") from exc
    log.info("loaded %s as policy version %d", path, new_version)
    return web.json_response({"policy_version": new_version, "path": path})


async def health(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    return web.json_response({"status": "ok", "policy_version": engine.policy_version})


async def models(request: web.Request) -> web.Response:
    engine, state = request.app[ENGINE_KEY], request.app[STATE_KEY]
    return web.json_response({"object": "list", "data": [{
        "id": state.model_name, "object": "model", "owned_by": "agent-rl",
        "max_model_len": engine.context_window,
    }]})


@web.middleware
async def errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(400, str(exc))
    except web.HTTPException as exc:
        return error_response(exc.status, exc.reason or str(exc), kind=type(exc).__name__)
    except Exception as exc:  # the server stays up; the client sees a 500 it may retry
        log.exception("request to %s failed", request.path)
        return error_response(500, f"{type(exc).__name__}: {exc}", kind="InternalServerError")


def build_app(engine: HFEngine, model_name: str, base_spec: str) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=64 * 1024 * 1024)
    app[ENGINE_KEY] = engine
    app[STATE_KEY] = ServerState(model_name=model_name, base_spec=base_spec, reload_lock=asyncio.Lock())
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/load_checkpoint", load_checkpoint)
    return app


async def serve(
    engine: HFEngine, *, model_name: str, base_spec: str, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Serve until SIGTERM/SIGINT, then finish in-flight requests and close the engine."""
    runner = web.AppRunner(build_app(engine, model_name, base_spec), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1] if runner.addresses else port  # port 0 → the real one
    # Tests and scripts parse this line to find the server.
    print(f"agent-rl serve: {model_name} at http://{host}:{bound_port}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        print("agent-rl serve: shutting down", flush=True)
        await runner.cleanup()
        await engine.close()
