"""Tool calls in each model family's text format (hermes, mistral, llama3_json, pythonic):
parsed into OpenAI tool_calls, written back for a history rendered afresh, detected from the
tokenizer's vocabulary, and served end to end by the gateway to the official `openai` client."""
from __future__ import annotations

import json

import openai
import pytest

from agent_rl.gateway.server import Gateway
from agent_rl.gateway.tool_calls import FORMATS, parse_tool_calls, resolve_format, tool_calls_as_text

LS = {"command": "ls -la"}
VIEW = {"path": "src/a.py", "lines": [1, 20]}


def _calls(calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


@pytest.mark.parametrize("fmt, text, content", [
    ("hermes", 'Looking.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls -la"}}\n</tool_call>\n'
               '<tool_call>{"name": "view", "arguments": {"path": "src/a.py", "lines": [1, 20]}}</tool_call>', "Looking."),
    ("mistral", 'Looking. [TOOL_CALLS][{"name": "bash", "arguments": {"command": "ls -la"}}, '
                '{"name": "view", "arguments": {"path": "src/a.py", "lines": [1, 20]}}]', "Looking."),
    ("mistral", '[TOOL_CALLS]bash[ARGS]{"command": "ls -la"}[TOOL_CALLS]view[ARGS]{"path": "src/a.py", "lines": [1, 20]}', ""),
    ("llama3_json", '<|python_tag|>{"name": "bash", "parameters": {"command": "ls -la"}}; '
                    '{"name": "view", "parameters": {"path": "src/a.py", "lines": [1, 20]}}', ""),
    ("llama3_json", '{"name": "bash", "parameters": {"command": "ls -la"}}\n'
                    '{"name": "view", "arguments": {"path": "src/a.py", "lines": [1, 20]}}', ""),
    ("pythonic", '[bash(command="ls -la"), view(path=\'src/a.py\', lines=[1, 20])]', ""),
])
def test_each_format_parses_into_openai_tool_calls(fmt, text, content):
    got_content, calls = parse_tool_calls(text, FORMATS[fmt])
    assert got_content == content
    assert _calls(calls) == [("bash", LS), ("view", VIEW)]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_written_calls_parse_back_the_same(fmt):
    calls = [{"function": {"name": "bash", "arguments": json.dumps(LS)}},
             {"function": {"name": "view", "arguments": VIEW}}]
    text = tool_calls_as_text(calls, FORMATS[fmt])
    assert _calls(parse_tool_calls(text, FORMATS[fmt])[1]) == [("bash", LS), ("view", VIEW)]


@pytest.mark.parametrize("fmt, text", [
    ("hermes", "<tool_call>{not json}</tool_call>"),
    ("mistral", "[TOOL_CALLS][{\"name\": \"bash\", \"arguments\": {\"command\": \"ls\"}}, {\"nam\": 1}]"),
    ("mistral", "[TOOL_CALLS]bash[ARGS]{broken"),
    ("llama3_json", '<|python_tag|>{"name": "bash", "parameters": {"command": "ls"}}; trailing words'),
    ("llama3_json", "just words"),
    # The pythonic text is data: anything but literal keyword arguments is not a call.
    ("pythonic", "[bash(command=__import__('os').system('id'))]"),
    ("pythonic", "[bash('ls')]"),
    ("pythonic", "[bash(**kw)]"),
    ("pythonic", "I would run [bash(command='ls')] next"),
    ("pythonic", "[]"),
])
def test_text_that_is_not_a_call_stays_text(fmt, text):
    # Left as the reply's content, so the harness tells the model its format was wrong.
    assert parse_tool_calls(text, FORMATS[fmt]) == (text, [])


def test_auto_picks_the_format_from_the_vocabulary():
    from agent_rl.engines.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    assert resolve_format("auto", tokenizer).name == "hermes"  # no marker token: the default
    assert resolve_format("pythonic", tokenizer).name == "pythonic"
    for marker, name in (("<|python_tag|>", "llama3_json"), ("[TOOL_CALLS]", "mistral")):
        tokenizer.add_special_tokens({"additional_special_tokens": [marker]})
        assert resolve_format("auto", tokenizer).name == name
    with pytest.raises(ValueError, match="unknown tool call format 'xml'"):
        resolve_format("xml", tokenizer)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt, reply", [
    ("mistral", 'I will list. [TOOL_CALLS][{"name": "bash", "arguments": {"command": "ls"}}]'),
    ("llama3_json", 'I will list.<|python_tag|>{"name": "bash", "parameters": {"command": "ls"}}'),
    ("pythonic", '[bash(command="ls")]'),
])
async def test_the_gateway_serves_each_format_to_the_openai_client(fmt, reply):
    from agent_rl.demos.expert import ScriptedEngine
    from agent_rl.engines.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    scripted = ScriptedEngine([reply, "Done."], tokenizer)
    tools = [{"type": "function", "function": {"name": "bash", "description": "Run a shell command",
                                               "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}]
    async with Gateway(scripted, tokenizer, config={"max_tokens": 64, "tool_call_format": fmt}) as gateway:
        session = gateway.open_session()
        client = openai.AsyncOpenAI(base_url=gateway.base_url(session), api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": "What files are here?"}]
        choice = (await client.chat.completions.create(model="m", messages=messages, tools=tools)).choices[0]
        assert choice.finish_reason == "tool_calls"
        assert (choice.message.content or "") == ("" if fmt == "pythonic" else "I will list.")
        (call,) = choice.message.tool_calls
        assert call.function.name == "bash" and json.loads(call.function.arguments) == {"command": "ls"}
        # SmolLM2's template ignores tools=: the gateway described them, asking for this format.
        assert FORMATS[fmt].how_to_call in tokenizer.decode(session.calls[0].prompt_ids)

        messages += [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "a.py"}]
        second = await client.chat.completions.create(model="m", messages=messages, tools=tools)
        assert second.choices[0].message.content == "Done."
        assert session.summary()["segments"] == 1  # the model's own call text stayed verbatim


def test_a_gateway_config_with_an_unknown_format_is_refused():
    from strictconfig import ConfigError

    from agent_rl.gateway.server import GatewayConfig

    with pytest.raises(ConfigError, match="tool_call_format"):
        GatewayConfig.from_config({"tool_call_format": "xml"})
