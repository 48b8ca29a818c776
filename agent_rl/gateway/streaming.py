"""Streamed answers (`stream: true`) as OpenAI's server-sent events.

The gateway needs the whole reply before it can answer: it records the call token-exactly and
parses tool calls out of the text. So a streamed answer is the finished answer sent as the chunk
sequence OpenAI's clients reassemble (role, content pieces, one chunk per tool call, the finish
reason, the usage chunk when `stream_options.include_usage` asks, then `[DONE]`). Harnesses that
only speak streaming work unchanged; their time to first token is the whole call's latency.

Pure functions from a non-streamed envelope to chunks, so the two answers cannot disagree.
"""
from __future__ import annotations

from typing import Any

from agent_rl.gateway.errors import RequestError

PIECE_CHARS = 64  # content is cut into pieces this long; any cut reassembles to the same text
DONE = b"data: [DONE]\n\n"


def stream_request(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream?, include usage?) from a request body; RequestError for malformed stream fields."""
    stream = body.get("stream")
    if stream not in (None, True, False):
        raise RequestError("stream must be true or false", param="stream")
    options = body.get("stream_options")
    if options is None:
        return bool(stream), False
    if not stream:
        raise RequestError("stream_options is only allowed when stream is true", param="stream_options")
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise RequestError("stream_options must be {\"include_usage\": true|false}", param="stream_options")
    return True, bool(options.get("include_usage", False))


def _pieces(text: str) -> list[str]:
    return [text[i:i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)]


def _extras(envelope: dict[str, Any], choice: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The gateway's own fields, carried on the last chunk: the policy version and session, and
    the token ids when the request asked for them."""
    extras = {k: envelope[k] for k in ("policy_version", "session") if k in envelope}
    return extras, {k: choice[k] for k in ("token_ids", "prompt_token_ids") if k in choice}


def _with_usage(chunks: list[dict[str, Any]], envelope: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    if include_usage:  # OpenAI's shape: a last chunk with no choices and the usage
        head = {k: v for k, v in chunks[-1].items() if k not in ("choices", "policy_version", "session")}
        chunks.append({**head, "choices": [], "usage": envelope["usage"]})
    return chunks


def chat_chunks(envelope: dict[str, Any], include_usage: bool = False) -> list[dict[str, Any]]:
    """The `chat.completion.chunk` sequence of one `chat.completion` envelope."""
    head = {"id": envelope["id"], "object": "chat.completion.chunk", "created": envelope["created"],
            "model": envelope["model"]}
    (choice,) = envelope["choices"]
    message = choice["message"]

    def chunk(delta: dict[str, Any], *, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    content = message.get("content") or ""
    if choice.get("logprobs") and content:
        # One piece carries every token's logprob: the pieces of a cut would not match tokens.
        chunks.append(chunk({"content": content}, logprobs=choice["logprobs"]))
    else:
        chunks += [chunk({"content": piece}) for piece in _pieces(content)]
    for index, call in enumerate(message.get("tool_calls") or []):
        chunks.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": call.get("type", "function"),
                                             "function": dict(call["function"])}]}))
    extras, ids = _extras(envelope, choice)
    last = chunk({}, finish=choice["finish_reason"])
    last["choices"][0].update(ids)
    chunks.append({**last, **extras})
    return _with_usage(chunks, envelope, include_usage)


def completion_chunks(envelope: dict[str, Any], include_usage: bool = False) -> list[dict[str, Any]]:
    """The streamed `text_completion` sequence of one completions envelope."""
    head = {"id": envelope["id"], "object": "text_completion", "created": envelope["created"],
            "model": envelope["model"]}
    (choice,) = envelope["choices"]

    def chunk(text: str, *, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]}

    text = choice.get("text") or ""
    if choice.get("logprobs") and text:
        chunks = [chunk(text, logprobs=choice["logprobs"])]
    else:
        chunks = [chunk(piece) for piece in _pieces(text)]
    extras, ids = _extras(envelope, choice)
    last = chunk("", finish=choice["finish_reason"])
    last["choices"][0].update(ids)
    chunks.append({**last, **extras})
    return _with_usage(chunks, envelope, include_usage)
