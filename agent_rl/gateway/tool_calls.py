"""Tool calls in the model family's own text format, mapped to and from OpenAI's.

The format is Hermes / Qwen's, which most open chat models are trained on: the model writes

    <tool_call>
    {"name": "bash", "arguments": {"command": "ls"}}
    </tool_call>

and the client receives it as an OpenAI `tool_calls` entry. A template that renders `tools`
itself (Qwen2.5, Llama 3.1, Hermes) is given them as it expects; for a template that ignores
them (SmolLM2's), the gateway describes the tools in the system turn in the same format, so
the model sees what it may call either way. What the model wrote stays in the conversation
verbatim: only the reply to the client carries the parsed form.
"""
from __future__ import annotations

import json
import re
import uuid
from typing import Any

from agent_rl.rollout.chat_template import ChatTokenizer, render

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

TOOLS_SYSTEM_PROMPT = (
    "You may call one or more functions to assist with the user query. The function signatures "
    "are within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\nFor each function call, "
    "return a json object with the function name and arguments within <tool_call></tool_call> XML "
    'tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def template_renders_tools(tokenizer: ChatTokenizer) -> bool:
    """Does the chat template put a `tools=` schema into the prompt?"""
    probe = [{"role": "user", "content": "x"}]
    tool = {"type": "function", "function": {"name": "probe_tool_xyz", "description": "probe",
                                             "parameters": {"type": "object", "properties": {}}}}
    try:
        with_tools = render(tokenizer, probe, add_generation_prompt=True, tools=[tool])
    except Exception:  # a template that chokes on tools= cannot render them
        return False
    return "probe_tool_xyz" in with_tools


def tools_system_text(tools: list[dict[str, Any]]) -> str:
    return TOOLS_SYSTEM_PROMPT.format(tools="\n".join(json.dumps(t, sort_keys=True) for t in tools))


def with_tools_described(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with the tool descriptions added to the system turn (a new one if none)."""
    text = tools_system_text(tools)
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{text}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """(content outside the calls, OpenAI tool_calls) from a reply.

    A block that is not a JSON object with a string "name" stays in the content: the harness
    then sees no call and tells the model its format was wrong, as it would for any model.
    A reply that is nothing but such an object (small models often drop the tags) counts too.
    """
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    position = 0
    for match in _TOOL_CALL.finditer(text):
        call = _as_call(match.group(1))
        if call is None:
            continue
        kept.append(text[position:match.start()])
        position = match.end()
        calls.append(call)
    kept.append(text[position:])
    if not calls and "<tool_call>" not in text:
        bare = _as_call(text.strip())
        if bare is not None:
            return "", [bare]
    return "".join(kept).strip() if calls else text, calls


def _as_call(blob: str) -> dict[str, Any] | None:
    try:
        data = json.loads(blob)
    except (json.JSONDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": data["name"], "arguments": json.dumps(arguments)}}


def tool_calls_as_text(tool_calls: list[dict[str, Any]]) -> str:
    """An assistant turn's OpenAI tool_calls written back in the model's format (for a history
    the gateway renders afresh, where the model's own text is not at hand)."""
    blocks = []
    for call in tool_calls:
        function = call.get("function") or {}
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        blocks.append("<tool_call>\n" + json.dumps({"name": function.get("name"), "arguments": arguments})
                      + "\n</tool_call>")
    return "\n".join(blocks)
