"""Tool calls in the model family's own text format, mapped to and from OpenAI's.

Open models write tool calls in one of a few text formats (vLLM's tool parsers carry the same
names):

  hermes       Hermes / Qwen2.5 / Qwen3:   <tool_call>{"name": "bash", "arguments": {...}}</tool_call>
  mistral      Mistral:                    [TOOL_CALLS][{"name": "bash", "arguments": {...}}]
                                           or, in v11+ tokenizers, [TOOL_CALLS]bash[ARGS]{...}
  llama3_json  Llama 3.1 / 3.2:            <|python_tag|>{"name": "bash", "parameters": {...}}
                                           (calls separated by ";", the tag optional)
  pythonic     Llama 3.2 / 4 pythonic:     [bash(command="ls"), view(path="a.py")]

`auto` picks the format from the tokenizer's vocabulary (the format's marker token), and
hermes when none is there. The client receives the calls as OpenAI `tool_calls`. A template that
renders `tools` itself is given them as it expects; for one that ignores them (SmolLM2's), the
gateway describes the tools in the system turn, in the chosen format, so the model sees what it
may call either way. What the model wrote stays in the conversation verbatim: only the reply to
the client carries the parsed form. A block that does not parse as a call stays in the content,
so the harness sees no call and tells the model its format was wrong, as it would for any model.
"""
from __future__ import annotations

import ast
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Literal

from agent_rl.rollout.chat_template import ChatTokenizer, render

ToolCallFormatName = Literal["auto", "hermes", "mistral", "llama3_json", "pythonic"]
Calls = list[dict[str, Any]]


# ------------------------------------------------------------------ one call, OpenAI's shape

def openai_call(name: Any, arguments: Any) -> dict[str, Any] | None:
    """An OpenAI tool_calls entry, or None when `name` is not a string or the arguments are not
    an object (a JSON string holding an object counts)."""
    if not isinstance(name, str) or not name:
        return None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def _call_from_object(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    return openai_call(data.get("name"), data.get("arguments", data.get("parameters", {})))


def _json(blob: str) -> Any:
    try:
        return json.loads(blob)
    except (json.JSONDecodeError, ValueError):
        return None


def _name_and_arguments(call: dict[str, Any]) -> tuple[Any, Any]:
    """An OpenAI tool_calls entry's name and its arguments as an object where they parse."""
    function = call.get("function") or {}
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        parsed = _json(arguments)
        arguments = parsed if parsed is not None else arguments
    return function.get("name"), arguments


# ------------------------------------------------------------------ hermes

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def _parse_hermes(text: str) -> tuple[str, Calls]:
    calls: Calls = []
    kept: list[str] = []
    position = 0
    for match in _HERMES.finditer(text):
        call = _call_from_object(_json(match.group(1)))
        if call is None:
            continue
        kept.append(text[position:match.start()])
        position = match.end()
        calls.append(call)
    kept.append(text[position:])
    if not calls and "<tool_call>" not in text:
        bare = _call_from_object(_json(text.strip()))  # small models often drop the tags
        if bare is not None:
            return "", [bare]
    return ("".join(kept).strip() if calls else text), calls


def _write_hermes(calls: Calls) -> str:
    return "\n".join("<tool_call>\n" + json.dumps({"name": n, "arguments": a}) + "\n</tool_call>"
                     for n, a in map(_name_and_arguments, calls))


# ------------------------------------------------------------------ mistral

_MISTRAL_TAG = "[TOOL_CALLS]"
_MISTRAL_V11 = re.compile(r"\s*([A-Za-z0-9_.-]+)\[ARGS\]")


def _parse_mistral(text: str) -> tuple[str, Calls]:
    start = text.find(_MISTRAL_TAG)
    if start < 0:
        return text, []
    content, rest = text[:start].strip(), text[start + len(_MISTRAL_TAG):]
    calls: Calls = []
    data = _json(rest.strip())
    if isinstance(data, list):  # [TOOL_CALLS][{...}, {...}]
        calls = [c for c in map(_call_from_object, data) if c is not None]
        return (content, calls) if calls and len(calls) == len(data) else (text, [])
    if isinstance(data, dict):
        call = _call_from_object(data)
        return (content, [call]) if call else (text, [])
    # v11: [TOOL_CALLS]name[ARGS]{json}[TOOL_CALLS]name[ARGS]{json}
    decoder = json.JSONDecoder()
    for chunk in rest.split(_MISTRAL_TAG):
        match = _MISTRAL_V11.match(chunk)
        if match is None:
            return text, []
        try:
            arguments, _ = decoder.raw_decode(chunk[match.end():].lstrip())
        except json.JSONDecodeError:
            return text, []
        call = openai_call(match.group(1), arguments)
        if call is None:
            return text, []
        calls.append(call)
    return content, calls


def _write_mistral(calls: Calls) -> str:
    return _MISTRAL_TAG + json.dumps([{"name": n, "arguments": a} for n, a in map(_name_and_arguments, calls)])


# ------------------------------------------------------------------ llama3_json

_PYTHON_TAG = "<|python_tag|>"


def _parse_llama3_json(text: str) -> tuple[str, Calls]:
    body = text.split(_PYTHON_TAG, 1)[1] if _PYTHON_TAG in text else text
    content = text.split(_PYTHON_TAG, 1)[0].strip() if _PYTHON_TAG in text else ""
    decoder = json.JSONDecoder()
    calls: Calls = []
    position, body = 0, body.strip()
    while position < len(body):
        try:
            data, end = decoder.raw_decode(body, position)
        except json.JSONDecodeError:
            return text, []
        call = _call_from_object(data)
        if call is None:
            return text, []
        calls.append(call)
        position = end
        while position < len(body) and body[position] in " \t\r\n;":
            position += 1
    return (content, calls) if calls else (text, [])


def _write_llama3_json(calls: Calls) -> str:
    return _PYTHON_TAG + "; ".join(json.dumps({"name": n, "parameters": a}) for n, a in map(_name_and_arguments, calls))


# ------------------------------------------------------------------ pythonic

def _parse_pythonic(text: str) -> tuple[str, Calls]:
    stripped = text.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return text, []
    try:
        tree = ast.parse(stripped, mode="eval")
    except SyntaxError:
        return text, []
    if not isinstance(tree.body, ast.List) or not tree.body.elts:
        return text, []
    calls: Calls = []
    for node in tree.body.elts:
        # Only literal keyword arguments: the text is data, never evaluated as code.
        if not isinstance(node, ast.Call) or node.args or any(k.arg is None for k in node.keywords):
            return text, []
        name = ast.unparse(node.func)
        try:
            arguments = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except (ValueError, SyntaxError):
            return text, []
        call = openai_call(name, arguments)
        if call is None:
            return text, []
        calls.append(call)
    return "", calls


def _write_pythonic(calls: Calls) -> str:
    parts = []
    for name, arguments in map(_name_and_arguments, calls):
        args = arguments if isinstance(arguments, dict) else {}
        parts.append(f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")")
    return "[" + ", ".join(parts) + "]"


# ------------------------------------------------------------------ the registry

@dataclass(frozen=True)
class ToolCallFormat:
    """One text format: how to read calls from a reply, write calls back into a history the
    gateway renders afresh, and describe the tools to a template that ignores `tools=`."""

    name: str
    parse: Callable[[str], tuple[str, Calls]]
    write: Callable[[Calls], str]
    how_to_call: str  # the instruction that ends the tools' description
    marker: str | None  # a vocabulary token that identifies the format (for `auto`)


FORMATS: dict[str, ToolCallFormat] = {f.name: f for f in (
    ToolCallFormat("hermes", _parse_hermes, _write_hermes,
                   "For each function call, return a json object with the function name and arguments within "
                   '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
                   "<args-json-object>}\n</tool_call>", "<tool_call>"),
    ToolCallFormat("mistral", _parse_mistral, _write_mistral,
                   'To call functions, reply with [TOOL_CALLS] followed by a JSON list: [TOOL_CALLS][{"name": '
                   '<function-name>, "arguments": <args-json-object>}]', _MISTRAL_TAG),
    ToolCallFormat("llama3_json", _parse_llama3_json, _write_llama3_json,
                   'To call a function, reply with <|python_tag|> followed by {"name": <function-name>, '
                   '"parameters": <args-json-object>}; separate several calls with ";"', _PYTHON_TAG),
    ToolCallFormat("pythonic", _parse_pythonic, _write_pythonic,
                   "To call functions, reply with nothing but a Python list of calls with keyword arguments: "
                   '[func_name(param="value"), other_func(n=1)]', None),
)}


def resolve_format(name: ToolCallFormatName, tokenizer: ChatTokenizer | None = None) -> ToolCallFormat:
    """The named format; `auto`: the first whose marker token is in the tokenizer's vocabulary
    (mistral, then llama3_json, then hermes), else hermes."""
    if name != "auto":
        if name not in FORMATS:
            raise ValueError(f"unknown tool call format {name!r}; known: auto, {', '.join(FORMATS)}")
        return FORMATS[name]
    vocab: dict[str, int] = {}
    if tokenizer is not None and hasattr(tokenizer, "get_vocab"):
        try:
            vocab = tokenizer.get_vocab()
        except Exception:  # a tokenizer without a readable vocabulary: the default format
            vocab = {}
    for candidate in ("mistral", "llama3_json", "hermes"):
        marker = FORMATS[candidate].marker
        if marker and marker in vocab:
            return FORMATS[candidate]
    return FORMATS["hermes"]


# ------------------------------------------------------------------ what the gateway calls

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


def tools_system_text(tools: list[dict[str, Any]], fmt: ToolCallFormat = FORMATS["hermes"]) -> str:
    listed = "\n".join(json.dumps(t, sort_keys=True) for t in tools)
    return ("You may call one or more functions to assist with the user query. The function signatures "
            f"are within <tools></tools> XML tags:\n<tools>\n{listed}\n</tools>\n\n{fmt.how_to_call}")


def with_tools_described(messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                         fmt: ToolCallFormat = FORMATS["hermes"]) -> list[dict[str, Any]]:
    """`messages` with the tool descriptions added to the system turn (a new one if none)."""
    text = tools_system_text(tools, fmt)
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{text}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def parse_tool_calls(text: str, fmt: ToolCallFormat = FORMATS["hermes"]) -> tuple[str, Calls]:
    """(content outside the calls, OpenAI tool_calls) from a reply in `fmt`."""
    return fmt.parse(text)


def tool_calls_as_text(tool_calls: Calls, fmt: ToolCallFormat = FORMATS["hermes"]) -> str:
    """An assistant turn's OpenAI tool_calls written back in the model's format (for a history
    the gateway renders afresh, where the model's own text is not at hand)."""
    return fmt.write(tool_calls)
