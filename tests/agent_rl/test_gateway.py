"""The recording gateway: segments, tool calls, sessions, and every bad request, with the
real SmolLM2 behind it on loopback and the official `openai` client in front."""
from __future__ import annotations

import json

import aiohttp
import openai
import pytest

from agent_rl.algo.batch import episode_advantages
from agent_rl.gateway.conversation import normalize_messages
from agent_rl.gateway.errors import RequestError
from agent_rl.gateway.recording import Call, segment_calls
from agent_rl.gateway.server import Gateway
from agent_rl.gateway.tool_calls import parse_tool_calls, template_renders_tools
from agent_rl.rollout.chat_template import TokenConversation
from agent_rl.rollout.harness import HarnessConfig, harness_argv
from agent_rl.rollout.runner import RolloutConfig
from agent_rl.rollout.trajectory import Trajectory
from strictconfig import ConfigError

SYSTEM = {"role": "system", "content": "You are a terse assistant."}


# ---------------------------------------------------------------- pure parts

def test_calls_that_extend_make_one_segment_and_a_rewrite_splits():
    calls = [
        Call(prompt_ids=[1, 2, 3], sampled_ids=[4, 5], logprobs=[-0.1, -0.2], policy_version=3),
        Call(prompt_ids=[1, 2, 3, 4, 5, 6, 7], sampled_ids=[8], logprobs=[-0.3], policy_version=4),
        Call(prompt_ids=[1, 2, 9], sampled_ids=[10, 11], logprobs=[-0.4, -0.5], policy_version=4),
    ]
    first, second = segment_calls(calls)
    assert first.prompt_ids == [1, 2, 3]
    assert first.response_ids == [4, 5, 6, 7, 8]
    assert first.loss_mask == [1, 1, 0, 0, 1]  # the harness's new turn (6, 7) is not the model's
    assert first.logprobs == [-0.1, -0.2, 0.0, 0.0, -0.3]
    assert first.token_versions == [3, 3, -1, -1, 4]
    assert first.calls == 2
    assert second.prompt_ids == [1, 2, 9] and second.response_ids == [10, 11] and second.loss_mask == [1, 1]
    # A call that repeats a prompt (a retry) is not an extension either: it starts a segment.
    assert len(segment_calls([calls[0], calls[0]])) == 2


def test_tool_calls_parse_from_hermes_blocks_and_bare_json():
    content, calls = parse_tool_calls('Let me look.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>')
    assert content == "Let me look."
    assert calls[0]["function"] == {"name": "bash", "arguments": json.dumps({"command": "ls"})}
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")
    _, calls = parse_tool_calls('{"name": "bash", "arguments": "{\\"command\\": \\"pwd\\"}"}')
    assert json.loads(calls[0]["function"]["arguments"]) == {"command": "pwd"}
    # Not a call: left as text, so the harness tells the model its format was wrong.
    text = "<tool_call>{not json}</tool_call>"
    assert parse_tool_calls(text) == (text, [])
    assert parse_tool_calls("just words") == ("just words", [])


@pytest.mark.parametrize("messages, match", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ([{"role": "wizard", "content": "x"}], "role must be one of"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "only text content"),
    ([{"role": "user", "content": 3}], "must be a string"),
    ([{"role": "user", "content": "x", "tool_calls": [{"function": {}}]}], "tool_calls must be a list on an assistant"),
])
def test_malformed_messages_are_refused_with_the_reason(messages, match):
    with pytest.raises(RequestError, match=match):
        normalize_messages(messages)


def test_echoed_replies_compare_equal_whatever_extra_fields_the_client_adds():
    ours = normalize_messages([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}]}])
    echoed = normalize_messages([{"role": "assistant", "content": "", "function_call": None, "refusal": None,
                                  "tool_calls": [{"id": "other", "type": "function",
                                                  "function": {"name": "bash", "arguments": '{"command":"ls"}'}}]}])
    assert ours == echoed


def test_harness_config_checks_its_placeholders():
    cfg = RolloutConfig.from_config({"harness": "{python} -m my.harness --url {base_url} --task {task_file}"})
    assert isinstance(cfg.harness, HarnessConfig) and cfg.harness.timeout_s == 1800
    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) \{base_ur\}"):
        RolloutConfig.from_config({"harness": {"command": "run --url {base_ur}"}})
    with pytest.raises(ConfigError, match="rollout.harness: unknown key.*did you mean .timeout_s"):
        RolloutConfig.from_config({"harness": {"command": "run", "tmeout_s": 3}})
    # Values fill words after splitting: a statement with spaces stays one argument.
    argv = harness_argv("run --say {instance_id} {base_url}", {"instance_id": "a b", "base_url": "http://x"})
    assert argv == ["run", "--say", "a b", "http://x"]


def test_segmented_episodes_weigh_as_one_sample_each():
    def traj(reward: float, g: int, segment: int = 0, segments: int = 1) -> Trajectory:
        return Trajectory(task_id="t", reward=reward, group_index=g, segment=segment, segments=segments)

    plain = [traj(1.0, 0), traj(0.0, 1)]
    split = [traj(1.0, 0, 0, 3), traj(1.0, 0, 1, 3), traj(1.0, 0, 2, 3), traj(0.0, 1)]
    plain_adv = episode_advantages(plain, [t.reward for t in plain], "grpo")
    split_adv = episode_advantages(split, [t.reward for t in split], "grpo")
    # Three segments of the winning episode do not make it three winners: same advantages.
    assert split_adv[:3] == [plain_adv[0]] * 3 and split_adv[3] == plain_adv[1]


# ---------------------------------------------------------------- with the real model

@pytest.fixture(scope="module")
def engine():
    from agent_rl.engines.hf import HFEngine

    engine = HFEngine("smollm2-135m", max_batch_size=4)
    yield engine
    engine.close_sync()


async def test_a_chat_session_is_one_token_exact_segment(engine):
    async with Gateway(engine, engine.tokenizer, model_name="smol", config={"max_tokens": 12}) as gateway:
        session = gateway.open_session("task-1")
        client = openai.AsyncOpenAI(base_url=gateway.base_url(session), api_key="unused", max_retries=0)
        messages = [SYSTEM, {"role": "user", "content": "Name a fruit."}]
        returned = []
        for turn in range(3):
            # The harness's own temperature is overridden by the run's (1.0): it is what trains.
            reply = await client.chat.completions.create(
                model="smol", messages=messages, temperature=0.0, extra_body={"return_token_ids": True})
            choice = reply.choices[0]
            returned.append(choice.model_extra["token_ids"])
            messages += [choice.message.model_dump(), {"role": "user", "content": f"Another one ({turn})."}]

        summary = session.summary()
        assert summary["calls"] == 3 and summary["segments"] == 1 and summary["splits"] == 0
        (segment,) = session.segments()
        sampled = [t for t, m in zip(segment.response_ids, segment.loss_mask) if m]
        assert sampled == [t for ids in returned for t in ids]  # exactly what the engine sampled
        # Each call's prompt is the previous call's ids, verbatim, then the new turn.
        for before, after in zip(session.calls, session.calls[1:]):
            assert after.prompt_ids[: len(before.prompt_ids) + len(before.sampled_ids)] == \
                before.prompt_ids + before.sampled_ids
        # Behaviour logprobs are the engine's for those tokens (temperature 1: the trainer's).
        for call in session.calls:
            scored = await engine.score_logprobs(call.prompt_ids, call.sampled_ids, 1.0)
            assert max(abs(a - b) for a, b in zip(scored, call.logprobs)) < 1e-3
        (traj,) = session.trajectories(reward=1.0, group_index=2)
        assert traj.prompt_ids + traj.response_ids == segment.ids
        assert traj.num_sampled_tokens == len(sampled) and traj.group_index == 2 and traj.segments == 1


async def test_a_harness_that_truncates_its_history_splits_the_session(engine):
    async with Gateway(engine, engine.tokenizer, model_name="smol", config={"max_tokens": 8}) as gateway:
        session = gateway.open_session("task-2")
        client = openai.AsyncOpenAI(base_url=gateway.base_url(session), api_key="unused", max_retries=0)
        messages = [SYSTEM, {"role": "user", "content": "Step one."}]
        for text in ("Step two.", "Step three."):
            reply = await client.chat.completions.create(model="smol", messages=messages)
            messages += [reply.choices[0].message.model_dump(), {"role": "user", "content": text}]
        # The harness summarises: it drops the middle of its history.
        truncated = [SYSTEM, {"role": "user", "content": "Summary of earlier steps. Step three."}]
        reply = await client.chat.completions.create(model="smol", messages=truncated)
        messages = truncated + [reply.choices[0].message.model_dump(), {"role": "user", "content": "Step four."}]
        await client.chat.completions.create(model="smol", messages=messages)

        summary = session.summary()
        assert summary["calls"] == 4 and summary["segments"] == 2 and summary["splits"] == 1
        first, second = session.segments()
        assert first.calls == 2 and second.calls == 2
        # The new segment starts from the truncated history rendered afresh, token-exactly.
        fresh = TokenConversation.start(engine.tokenizer, truncated)
        assert second.prompt_ids == fresh.prompt_ids
        trajectories = session.trajectories(reward=0.5)
        assert [t.segment for t in trajectories] == [0, 1] and {t.segments for t in trajectories} == {2}
        assert all(t.reward == 0.5 for t in trajectories)
        assert sum(t.num_sampled_tokens for t in trajectories) == sum(len(c.sampled_ids) for c in session.calls)


async def test_tool_calls_come_back_as_openai_tool_calls_and_the_next_turn_extends():
    from agent_rl.demos.expert import ScriptedEngine
    from agent_rl.engines.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    assert not template_renders_tools(tokenizer)  # SmolLM2's template ignores tools=: the gateway describes them
    scripted = ScriptedEngine(['I will list.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>',
                               "Done."], tokenizer)
    tools = [{"type": "function", "function": {"name": "bash", "description": "Run a shell command",
                                               "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}]
    async with Gateway(scripted, tokenizer, config={"max_tokens": 64}) as gateway:
        session = gateway.open_session()
        client = openai.AsyncOpenAI(base_url=gateway.base_url(session), api_key="unused", max_retries=0)
        messages = [SYSTEM, {"role": "user", "content": "What files are here?"}]
        reply = await client.chat.completions.create(model="m", messages=messages, tools=tools)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content == "I will list."
        (call,) = choice.message.tool_calls
        assert call.function.name == "bash" and json.loads(call.function.arguments) == {"command": "ls"}
        prompt_text = tokenizer.decode(session.calls[0].prompt_ids)
        assert "<tools>" in prompt_text and '"name": "bash"' in prompt_text

        messages += [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "a.py\nb.py"}]
        reply = await client.chat.completions.create(model="m", messages=messages, tools=tools)
        assert reply.choices[0].message.content == "Done." and not reply.choices[0].message.tool_calls
        assert session.summary()["segments"] == 1  # the model's own tool-call text stayed verbatim
        (segment,) = session.segments()
        assert "<|im_start|>tool\na.py\nb.py<|im_end|>" in tokenizer.decode(segment.response_ids)


LONG_REPLY = ("Let me look at the files first, then run the tests, then fix what they show is broken. "
              "<tool_call>\n{\"name\": \"bash\", \"arguments\": {\"command\": \"ls -la\"}}\n</tool_call>")


async def test_streamed_answers_reassemble_to_the_whole_answer_and_record_the_same():
    """`stream: true` through the official client: the chunks reassemble to the answer the same
    call gets unstreamed (content, tool calls, finish reason, usage), and the recordings match."""
    from agent_rl.demos.expert import ScriptedEngine
    from agent_rl.engines.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    messages = [SYSTEM, {"role": "user", "content": "What files are here?"}]
    async with Gateway(ScriptedEngine([LONG_REPLY, LONG_REPLY], tokenizer), tokenizer, config={"max_tokens": 96}) as gateway:
        whole_session, streamed_session = gateway.open_session(), gateway.open_session()
        async with openai.AsyncOpenAI(base_url=gateway.base_url(whole_session), api_key="x", max_retries=0) as client:
            whole = await client.chat.completions.create(model="m", messages=messages, tools=tools)
        async with openai.AsyncOpenAI(base_url=gateway.base_url(streamed_session), api_key="x", max_retries=0) as client:
            stream = await client.chat.completions.create(model="m", messages=messages, tools=tools, stream=True,
                                                          stream_options={"include_usage": True})
            chunks = [chunk async for chunk in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    expected = whole.choices[0].message
    assert content == expected.content and len([c for c in chunks if c.choices]) > 3  # really in pieces
    assert [(c.function.name, c.function.arguments) for c in calls] == \
        [(c.function.name, c.function.arguments) for c in expected.tool_calls]
    assert all(c.id.startswith("call_") and c.type == "function" for c in calls)
    assert finishes == ["tool_calls"] == [whole.choices[0].finish_reason]
    assert not chunks[-1].choices and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert [(c.prompt_ids, c.sampled_ids) for c in streamed_session.calls] == \
        [(c.prompt_ids, c.sampled_ids) for c in whole_session.calls]

    # /v1/completions streams too, read as raw server-sent events: data lines, then [DONE].
    async with Gateway(ScriptedEngine(["x" * 150], tokenizer), tokenizer, config={"max_tokens": 96}) as gateway:
        session = gateway.open_session()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{gateway.base_url(session)}/completions",
                                 json={"prompt": "Say x.", "stream": True, "return_token_ids": True}) as response:
                assert response.headers["Content-Type"].startswith("text/event-stream")
                events = [line for line in (await response.text()).split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    bodies = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert "".join(b["choices"][0]["text"] for b in bodies) == "x" * 150
    assert bodies[-1]["choices"][0]["token_ids"] == session.calls[0].sampled_ids
    assert bodies[-1]["session"] == session.id and "usage" not in bodies[-1]


async def _post(http: aiohttp.ClientSession, url: str, body=None, raw: bytes | None = None, headers=None):
    data = raw if raw is not None else json.dumps(body)
    async with http.post(url, data=data, headers=headers or {"Content-Type": "application/json"}) as response:
        return response.status, await response.json()


async def test_bad_requests_get_openai_errors_and_corrupt_no_recording(engine):
    async with Gateway(engine, engine.tokenizer, model_name="smol",
                       config={"max_tokens": 6, "max_context_tokens": 256}) as gateway:
        a, b = gateway.open_session("a"), gateway.open_session("b")
        base_a, base_b = gateway.base_url(a), gateway.base_url(b)
        good = [SYSTEM, {"role": "user", "content": "Hi."}]
        async with aiohttp.ClientSession() as http:
            status, body = await _post(http, f"{base_a}/chat/completions", {"model": "smol", "messages": good})
            assert status == 200
            reply = body["choices"][0]["message"]
            before = session_state(a)

            bad = [
                (f"{base_a}/chat/completions", None, b"{not json", 400, None),
                (f"{base_a}/chat/completions", {"messages": "hi"}, None, 400, "messages"),
                (f"{base_a}/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, None, 400, "messages"),
                (f"{base_a}/chat/completions", {"messages": good, "n": 2}, None, 400, "n"),
                (f"{base_a}/chat/completions", {"messages": good, "stream": "yes"}, None, 400, "stream"),
                (f"{base_a}/chat/completions", {"messages": good, "stream_options": {"include_usage": True}}, None,
                 400, "stream_options"),  # only with stream: true
                (f"{base_a}/chat/completions", {"messages": good, "max_tokens": -3}, None, 400, "max_tokens"),
                (f"{base_a}/chat/completions", {"messages": good, "tools": [{"type": "function"}]}, None, 400, "tools"),
                (f"{base_a}/chat/completions", {"messages": good, "tools": [{"type": "function", "function": {"name": "f"}}],
                                                "tool_choice": "required"}, None, 400, "tool_choice"),
                (f"{base_a}/chat/completions", {"messages": good + [reply, {"role": "user", "content": "word " * 400}]},
                 None, 400, "messages"),  # context overflow, mid-conversation
                (f"{base_b}/completions", {"prompt": [10**9]}, None, 400, "prompt"),
                (f"{base_b}/completions", {"prompt": ""}, None, 400, "prompt"),
                (f"{gateway.url}/s/{'0' * 32}/v1/chat/completions", {"messages": good}, None, 404, None),
                (f"{gateway.url}/v1/chat/completions", {"messages": good}, None, 400, None),  # no session at all
                (f"{gateway.exec_url(a)}", {"command": "ls"}, None, 409, None),  # no sandbox behind this session
                (f"{gateway.exec_url(a)}", {"command": ""}, None, 400, "command"),
            ]
            for url, payload, raw, want, param in bad:
                status, body = await _post(http, url, payload, raw)
                assert status == want, (url, payload, body)
                error = body["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"], body
                if param:
                    assert error["param"] == param, body
            overflow = await _post(http, f"{base_a}/chat/completions",
                                   {"messages": [{"role": "user", "content": "word " * 400}]})
            assert overflow[1]["error"]["code"] == "context_length_exceeded"

            assert session_state(a) == before  # nothing recorded, the conversation unchanged
            assert a.rejected == 11 and b.rejected == 2 and b.calls == []
            # A's next real turn still extends its first: the bad requests left no trace.
            status, _ = await _post(http, f"{base_a}/chat/completions",
                                    {"messages": good + [reply, {"role": "user", "content": "Again."}]})
            assert status == 200 and a.summary()["segments"] == 1 and len(a.calls) == 2
            # The session as the API key works on /v1 too; a closed session is refused.
            status, _ = await _post(http, f"{gateway.url}/v1/completions", {"prompt": "Hello"},
                                    headers={"Authorization": f"Bearer {b.id}", "Content-Type": "application/json"})
            assert status == 200 and len(b.calls) == 1
            async with http.delete(f"{gateway.url}/sessions/{b.id}") as response:
                recording = await response.json()
            assert recording["closed"] and recording["calls"] == 1 and len(recording["segment_log"]) == 1
            status, body = await _post(http, f"{base_b}/completions", {"prompt": "Hello"})
            assert status == 404 and "closed" in body["error"]["message"]
        # The official client turns these into its typed errors.
        client = openai.AsyncOpenAI(base_url=base_a, api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="smol", messages=good, n=3)
        assert caught.value.param == "n"
        with pytest.raises(openai.NotFoundError):
            await openai.AsyncOpenAI(base_url=base_b, api_key="x", max_retries=0).completions.create(
                model="smol", prompt="Hi")


def session_state(session) -> tuple:
    conv = session.chat.conv
    return (len(session.calls), list(conv.ids), [dict(m) for m in session.chat.history])


def test_agent_rl_gateway_command_serves_sessions(tmp_path):
    import requests

    from serve_process import ServerProcess

    server = ServerProcess(tmp_path / "gateway.log",
                           command=["gateway", "--port", "0", "--max-tokens", "8", "--served-model-name", "smol"])
    try:
        root = server.url.rsplit("/v1", 1)[0]
        created = requests.post(f"{root}/sessions", json={"task_id": "cli"}, timeout=30).json()
        assert created["base_url"] == f"{root}/s/{created['id']}/v1"
        client = openai.OpenAI(base_url=created["base_url"], api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}])
        assert reply.model == "smol" and reply.usage.completion_tokens <= 8
        recording = requests.get(f"{root}/sessions/{created['id']}", timeout=30).json()
        assert recording["task_id"] == "cli" and recording["calls"] == 1 and recording["segments"] == 1
        assert recording["call_log"][0]["sampled_ids"] == recording["segment_log"][0]["response_ids"]
    finally:
        assert server.stop() == 0


async def test_gateway_in_front_of_an_openai_compatible_upstream(tmp_path):
    """The gateway over the `openai` engine (token mode) talking to `agent-rl serve`, as it
    would to a vLLM server: the recording holds the upstream's own token ids and logprobs."""
    from serve_process import ServerProcess

    from agent_rl.engines.factory import make_engine
    from agent_rl.engines.models import load_tokenizer

    server = ServerProcess(tmp_path / "serve.log")
    tokenizer = load_tokenizer("smollm2-135m")
    upstream = make_engine({"kind": "openai", "base_url": server.url.rsplit("/v1", 1)[0],
                            "model": "smollm2-135m"}, tokenizer=tokenizer)
    try:
        async with Gateway(upstream, tokenizer, config={"max_tokens": 8}) as gateway:
            session = gateway.open_session()
            client = openai.AsyncOpenAI(base_url=gateway.base_url(session), api_key="unused", max_retries=0)
            messages = [SYSTEM, {"role": "user", "content": "Hi."}]
            reply = await client.chat.completions.create(model="m", messages=messages,
                                                         extra_body={"return_token_ids": True})
            messages += [reply.choices[0].message.model_dump(), {"role": "user", "content": "More."}]
            await client.chat.completions.create(model="m", messages=messages)
            assert session.summary()["segments"] == 1 and len(session.calls) == 2
            first = session.calls[0]
            assert reply.choices[0].model_extra["token_ids"] == first.sampled_ids
            assert all(lp <= 0.0 for lp in first.logprobs) and any(lp < 0.0 for lp in first.logprobs)
    finally:
        await upstream.close()
        server.stop()
