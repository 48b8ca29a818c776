"""The gateway's HTTP routes (aiohttp).

    POST /s/<id>/v1/chat/completions   chat, the template applied here, tools in Hermes format
    POST /s/<id>/v1/completions        text or token-id prompts
    GET  /s/<id>/v1/models             the served model (as /v1/models)
    POST /s/<id>/exec                  {"command", "timeout"?, "cwd"?}: run it in the session's sandbox
    POST /v1/chat/completions, /v1/completions   the same, the session named by the API key
    POST /sessions {"task_id"?}        a new session (no sandbox): {"id", "base_url"}
    GET  /sessions/<id>                its recording: calls, segments, splits
    DELETE /sessions/<id>              close it (later calls get 404) and return its recording
    GET  /health

`stream: true` is answered as server-sent events once the reply is whole (see streaming.py).
Every error is OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, and nothing is
recorded for a request that fails: the session's conversation stays as it was.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent_rl.gateway.conversation import normalize_messages
from agent_rl.gateway.errors import GatewayError, NoSandbox, RequestError, UpstreamError
from agent_rl.gateway.recording import Call
from agent_rl.gateway.sessions import Session
from agent_rl.gateway.streaming import DONE, chat_chunks, completion_chunks, stream_request
from agent_rl.gateway.tool_calls import parse_tool_calls

if TYPE_CHECKING:
    from agent_rl.gateway.server import Gateway

log = logging.getLogger(__name__)

GATEWAY_KEY: web.AppKey["Gateway"] = web.AppKey("gateway")

# Request fields with a meaning the gateway cannot honour; anything else unknown is ignored,
# as OpenAI-compatible servers do, so harnesses that send vendor extras keep working.
_REFUSED = {
    "n": lambda v: v not in (None, 1),
    "best_of": lambda v: v not in (None, 1),
    "echo": lambda v: bool(v),
    "suffix": lambda v: v not in (None, ""),
}
_WHY = {
    "n": "n > 1 is not supported: each sample of a group is its own session (its own episode)",
    "best_of": "best_of is not supported (n=1 only)",
    "echo": "echo is not supported",
    "suffix": "suffix (insertion) is not supported",
}


def _refuse_unsupported(body: dict[str, Any]) -> tuple[bool, bool]:
    """Refuse what cannot be honoured; (stream?, include usage?) for what can."""
    for key, refused in _REFUSED.items():
        if refused(body.get(key)):
            raise RequestError(_WHY[key], param=key)
    return stream_request(body)


async def _answer(request: web.Request, envelope: dict[str, Any], stream: tuple[bool, bool]) -> web.StreamResponse:
    """The envelope as one JSON body, or as server-sent events when the request streams."""
    streaming, include_usage = stream
    if not streaming:
        return web.json_response(envelope)
    to_chunks = chat_chunks if envelope["object"] == "chat.completion" else completion_chunks
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for chunk in to_chunks(envelope, include_usage):
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    await response.write(DONE)
    await response.write_eof()
    return response


async def _read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except Exception as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


def _session(request: web.Request) -> Session:
    """The session named by the path, else by the bearer key."""
    gateway = request.app[GATEWAY_KEY]
    session_id = request.match_info.get("session")
    if session_id is None:
        auth = request.headers.get("Authorization", "")
        session_id = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not session_id:
            raise RequestError("no session: use the base URL /s/<session>/v1, or send the session id as the "
                               "API key (Authorization: Bearer <session>)", code="session_not_found")
    return gateway.sessions.live(session_id)


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise RequestError("tools must be a list of {type: function, function: {name, ...}}", param="tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" \
                or not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestError(f"tools[{i}] must be {{type: function, function: {{name, parameters}}}}", param="tools")
    if body.get("tool_choice") not in (None, "auto", "none"):
        raise RequestError("tool_choice must be auto or none: the gateway cannot force a call", param="tool_choice")
    return None if body.get("tool_choice") == "none" else tools


def _envelope(kind: str, gateway: "Gateway", choice: dict[str, Any], call: Call, session: Session) -> dict[str, Any]:
    prefix = "cmpl" if kind == "text_completion" else "chatcmpl"
    n_prompt, n_out = len(call.prompt_ids), len(call.sampled_ids)
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
        "model": gateway.model_name, "choices": [choice],
        "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out},
        "policy_version": call.policy_version, "session": session.id,
    }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY_KEY]
    session = _session(request)
    try:
        body = await _read_json(request)
        stream = _refuse_unsupported(body)
        normal = normalize_messages(body.get("messages"))
        tools = _tools(body)
        async with session.lock:  # one call at a time per session: the recording's order is the chat's
            if session.closed:
                gateway.sessions.live(session.id)  # raises: closed while this call waited
            conv, _ = session.chat.next_prompt(gateway.tokenizer, normal, tools, gateway.template_has_tools,
                                               gateway.tool_format)
            prompt_ids = conv.ids
            generation = await gateway.generate(prompt_ids, body)
            try:
                turn = conv.add_generation(generation.token_ids, generation.logprobs)
            except Exception as exc:  # template drift on this reply: it cannot be recorded token-exactly
                raise UpstreamError(f"the reply cannot be appended to the conversation: {exc}") from exc
            content, tool_calls = parse_tool_calls(turn.text, gateway.tool_format) if tools else (turn.text, [])
            message: dict[str, Any] = {"role": "assistant", "content": content if (content or not tool_calls) else None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            call = Call(prompt_ids=list(prompt_ids), sampled_ids=list(generation.token_ids),
                        logprobs=list(generation.logprobs), policy_version=gateway.version_of(generation),
                        finish_reason=generation.finish_reason, endpoint="chat")
            session.record(call)
            session.chat.commit(conv, normal, message, tools)
    except GatewayError:
        session.rejected += 1
        raise
    finish = "tool_calls" if tool_calls else generation.finish_reason
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    if body.get("logprobs"):
        tokens = gateway.tokenizer.convert_ids_to_tokens(call.sampled_ids)
        choice["logprobs"] = {"content": [{"token": t, "logprob": lp, "bytes": None, "top_logprobs": []}
                                          for t, lp in zip(tokens, call.logprobs)]}
    if body.get("return_token_ids"):
        choice["token_ids"] = call.sampled_ids
        choice["prompt_token_ids"] = call.prompt_ids
    return await _answer(request, _envelope("chat.completion", gateway, choice, call, session), stream)


def _prompt_ids(prompt: Any, tokenizer: Any) -> list[int]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt:
        return list(tokenizer.encode(prompt, add_special_tokens=False))
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        vocab = len(tokenizer)
        bad = [t for t in prompt if t < 0 or t >= vocab]
        if bad:
            raise RequestError(f"prompt token ids out of the vocabulary (0..{vocab - 1}): {bad[:5]}", param="prompt")
        return list(prompt)
    raise RequestError("prompt must be a non-empty string or list of token ids (one prompt per request)",
                       param="prompt")


async def completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY_KEY]
    session = _session(request)
    try:
        body = await _read_json(request)
        stream = _refuse_unsupported(body)
        prompt_ids = _prompt_ids(body.get("prompt"), gateway.tokenizer)
        async with session.lock:
            if session.closed:
                gateway.sessions.live(session.id)
            generation = await gateway.generate(prompt_ids, body)
            call = Call(prompt_ids=prompt_ids, sampled_ids=list(generation.token_ids),
                        logprobs=list(generation.logprobs), policy_version=gateway.version_of(generation),
                        finish_reason=generation.finish_reason, endpoint="completions")
            session.record(call)
    except GatewayError:
        session.rejected += 1
        raise
    text = gateway.tokenizer.decode(call.sampled_ids, skip_special_tokens=True)
    choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": generation.finish_reason, "logprobs": None}
    if body.get("logprobs") is not None:
        choice["logprobs"] = {"tokens": gateway.tokenizer.convert_ids_to_tokens(call.sampled_ids),
                              "token_logprobs": call.logprobs, "top_logprobs": None, "text_offset": []}
    if body.get("return_token_ids"):
        choice["token_ids"] = call.sampled_ids
        choice["prompt_token_ids"] = call.prompt_ids
    return await _answer(request, _envelope("text_completion", gateway, choice, call, session), stream)


async def execute(request: web.Request) -> web.Response:
    session = _session(request)
    body = await _read_json(request)
    command = body.get("command")
    if not isinstance(command, str) or not command.strip():
        raise RequestError('body must be {"command": "<shell command>", "timeout": seconds?, "cwd": dir?}',
                           param="command")
    timeout = body.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0):
        raise RequestError("timeout must be a positive number of seconds", param="timeout")
    cwd = body.get("cwd") or None
    if cwd is not None and not isinstance(cwd, str):
        raise RequestError("cwd must be a path", param="cwd")
    if session.executor is None:
        raise NoSandbox("this session has no sandbox: only sessions of a training/rollout episode run commands")
    try:
        result = await session.executor(command, None if timeout is None else float(timeout), cwd)
    except GatewayError:
        raise
    except Exception as exc:  # the workspace died, or the episode is being torn down
        raise UpstreamError(f"the sandbox could not run the command: {type(exc).__name__}: {exc}") from exc
    session.commands += 1
    return web.json_response(result)


async def models(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    if "session" in request.match_info:
        _session(request)
    return web.json_response({"object": "list", "data": [{
        "id": gateway.model_name, "object": "model", "owned_by": "agent-rl-gateway",
        "max_model_len": gateway.context_window,
    }]})


async def create_session(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    body = await _read_json(request) if request.can_read_body else {}
    task_id = body.get("task_id", "")
    if not isinstance(task_id, str):
        raise RequestError("task_id must be a string", param="task_id")
    session = gateway.sessions.create(task_id)
    return web.json_response({"id": session.id, "base_url": gateway.base_url(session)}, status=201)


async def get_session(request: web.Request) -> web.Response:
    session = request.app[GATEWAY_KEY].sessions.get(request.match_info["session"])
    return web.json_response(session.recording())


async def close_session(request: web.Request) -> web.Response:
    session = request.app[GATEWAY_KEY].sessions.close(request.match_info["session"])
    return web.json_response(session.recording())


async def health(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    return web.json_response({"status": "ok", "sessions": len(gateway.sessions)})


@web.middleware
async def openai_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        body = {"error": {"message": exc.reason or str(exc), "type": "invalid_request_error", "param": None,
                          "code": None}}
        return web.json_response(body, status=exc.status)
    except Exception as exc:  # the gateway stays up; the client sees a 500 it may retry
        log.exception("gateway request to %s failed", request.path)
        body = {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "internal_error", "param": None,
                          "code": None}}
        return web.json_response(body, status=500)


def build_app(gateway: "Gateway") -> web.Application:
    app = web.Application(middlewares=[openai_errors], client_max_size=32 * 1024 * 1024)
    app[GATEWAY_KEY] = gateway
    for prefix in ("/s/{session}/v1", "/v1"):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_post(f"{prefix}/completions", completions)
        app.router.add_get(f"{prefix}/models", models)
    app.router.add_post("/s/{session}/exec", execute)
    app.router.add_post("/sessions", create_session)
    app.router.add_get("/sessions/{session}", get_session)
    app.router.add_delete("/sessions/{session}", close_session)
    app.router.add_get("/health", health)
    return app
