"""From an OpenAI `messages` list to the exact prompt ids, extending the session's last call.

A harness re-sends its whole history every call. If that history is the previous request's
messages plus the reply the gateway gave, plus new turns (tool results, a user turn), the new
prompt is the previous ids, the ids the model sampled (verbatim), and the template's token
delta for the new turns (`TokenConversation.add_messages`): no sampled text is re-tokenized,
and the recording sees one growing sequence. Any other history (truncated, summarised, edited)
is rendered afresh, which starts a new segment of the recording.

Messages are compared in a normal form (role, text content, tool calls by name and arguments)
so a client that echoes the reply back with extra fields (ids, `function_call: null`) still
counts as extending.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent_rl.gateway.errors import RequestError
from agent_rl.gateway.tool_calls import FORMATS, ToolCallFormat, tool_calls_as_text, with_tools_described
from agent_rl.rollout.chat_template import ChatTokenizer, TemplateDriftError, TokenConversation

ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text ones can be rendered
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RequestError(f"{where}.content: only text content parts are supported, got {kind!r}",
                                   param="messages")
        return "".join(parts)
    raise RequestError(f"{where}.content must be a string or a list of text parts", param="messages")


def _tool_call_key(call: Any, where: str) -> tuple[str, str]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise RequestError(f"{where}: each tool call needs function.name", param="messages")
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # kept as the string it is: compared as written
    return function["name"], json.dumps(arguments, sort_keys=True)


def normalize_messages(raw: Any) -> list[dict[str, Any]]:
    """Validate an OpenAI `messages` list; return it in the normal form used for comparing."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list of {role, content} objects", param="messages")
    normal = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"{where} must be an object", param="messages")
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", param="messages")
        entry: dict[str, Any] = {"role": role, "content": _text(message.get("content"), where)}
        calls = message.get("tool_calls") or []
        if calls:
            if role != "assistant" or not isinstance(calls, list):
                raise RequestError(f"{where}.tool_calls must be a list on an assistant message", param="messages")
            entry["tool_calls"] = [_tool_call_key(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
        normal.append(entry)
    return normal


def template_messages(normal: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                      template_has_tools: bool, fmt: ToolCallFormat = FORMATS["hermes"]) -> list[dict[str, Any]]:
    """What the chat template renders for a fresh history: roles it knows, text content, and
    earlier tool calls in the model's own format when the template cannot render them."""
    out = []
    for m in normal:
        role = "system" if m["role"] == "developer" else m["role"]
        content = m["content"]
        entry: dict[str, Any] = {"role": role, "content": content}
        if m.get("tool_calls"):
            if template_has_tools:
                entry["tool_calls"] = [{"type": "function", "function": {"name": n, "arguments": json.loads(a)}}
                                       for n, a in m["tool_calls"]]
            else:
                calls = [{"function": {"name": n, "arguments": a}} for n, a in m["tool_calls"]]
                entry["content"] = "\n".join(x for x in (content, tool_calls_as_text(calls, fmt)) if x)
        out.append(entry)
    if tools and not template_has_tools:
        out = with_tools_described(out, tools, fmt)
    return out


def fork(conv: TokenConversation) -> TokenConversation:
    """A copy to build the next prompt on, so a request that fails leaves the session as it was."""
    return TokenConversation(
        tokenizer=conv.tokenizer, messages=[dict(m) for m in conv.messages], prompt_ids=list(conv.prompt_ids),
        response_ids=list(conv.response_ids), loss_mask=list(conv.loss_mask), logprobs=list(conv.logprobs),
        segments=list(conv.segments), rendered=conv.rendered, awaiting_generation=conv.awaiting_generation,
        template_kwargs=dict(conv.template_kwargs),
    )


@dataclass
class ChatState:
    """A session's chat so far: the token conversation and the history as the client sees it
    (its messages plus the replies the gateway gave), to recognise an extending request."""

    conv: TokenConversation | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    tools_key: str = ""

    def next_prompt(self, tokenizer: ChatTokenizer, normal: list[dict[str, Any]],
                    tools: list[dict[str, Any]] | None, template_has_tools: bool,
                    fmt: ToolCallFormat = FORMATS["hermes"]) -> tuple[TokenConversation, bool]:
        """(the conversation to generate from, whether it extends the last call's)."""
        tools_key = json.dumps(tools or [], sort_keys=True)
        n = len(self.history)
        if (self.conv is not None and not self.conv.awaiting_generation and tools_key == self.tools_key
                and len(normal) > n and normal[:n] == self.history):
            conv = fork(self.conv)
            new = template_messages(normal[n:], None, template_has_tools, fmt)
            try:
                conv.add_messages(new)
                return conv, True
            except TemplateDriftError:
                pass  # the template rewrites earlier turns given these: render afresh (a split)
        kwargs = {"tools": tools} if tools and template_has_tools else {}
        try:
            conv = TokenConversation.start(tokenizer, template_messages(normal, tools, template_has_tools, fmt), kwargs)
        except TemplateDriftError as exc:
            raise RequestError(f"cannot render these messages with the model's chat template: {exc}",
                               param="messages") from exc
        except Exception as exc:  # the template's own checks (e.g. roles must alternate)
            raise RequestError(f"the model's chat template rejected these messages: {exc}", param="messages") from exc
        return conv, False

    def commit(self, conv: TokenConversation, normal: list[dict[str, Any]], reply: dict[str, Any],
               tools: list[dict[str, Any]] | None) -> None:
        """After a successful call: remember the conversation and the client's view of it."""
        self.conv = conv
        self.history = normal + normalize_messages([reply])
        self.tools_key = json.dumps(tools or [], sort_keys=True)
