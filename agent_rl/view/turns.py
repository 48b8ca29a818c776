"""An episode's chat → turns a person can read: the prompt, then per assistant reply its thought,
its action and the observation that answered it, with the reply's own sampled tokens.

Where the action lies in a fenced-format reply comes from the environment's own scanner
(`envs.actions.fenced_action_spans`), and what the action *is* (bash, view, edit, submit or a
format error) from its own parser (`envs.actions.parse_action`), so the viewer never disagrees
with what the episode did: a ```python block shown while reasoning is thought, as the env
ignores it.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

from agent_rl.view.tokens import finite_logprob
from envs.actions import Bash, Create, FormatError, StrReplace, Submit, View, fenced_action_spans, parse_action

_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def message_text(message: dict[str, Any]) -> str:
    """A message's text; OpenAI content parts are joined, a missing content is ''."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def reply_format(text: str) -> str:
    """The action format a reply is read in ("json" or "fenced"); the log keeps no env config,
    so it is guessed from the reply, the same way for the split and for the action's kind."""
    return "json" if "<tool_call>" in text or text.strip().startswith("{") else "fenced"


def split_reply(text: str) -> tuple[str, str]:
    """(thought, action text). Fenced: the spans the env reads as actions (action-tagged blocks,
    fences included, an unclosed one to the end; `<submit/>` outside them) are the action, the
    rest the thought. JSON: the first `<tool_call>`'s body, or the whole reply when it is one
    JSON object. A reply with no action is all thought."""
    if reply_format(text) == "json":
        call = _TOOL_CALL.search(text)
        if call:
            return _outside(text, [(call.start(), call.end())]), call.group(1).strip()
        return "", text.strip()
    spans = fenced_action_spans(text)
    if not spans:
        return text.strip(), ""
    # More than one span is a reply the env refuses; all of them are shown as the action, so
    # nothing the model tried to run reads as thought.
    action = "\n\n".join(text[start:end].strip() for start, end in spans)
    return _outside(text, spans), action


def _outside(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """The text around the sorted, disjoint `spans`, its pieces stripped and joined by a blank line."""
    pieces: list[str] = []
    pos = 0
    for start, end in spans:
        pieces.append(text[pos:start].strip())
        pos = end
    pieces.append(text[pos:].strip())
    return "\n\n".join(p for p in pieces if p)


def action_kind(text: str, tool_calls: Any = None) -> str:
    """bash | view | create | edit | submit | invalid, as the environment would parse it."""
    if tool_calls:
        # A gateway session's OpenAI tool call: the env parses the same call shape.
        first = tool_calls[0] if isinstance(tool_calls, list) else tool_calls
        parsed = parse_action(json.dumps(first), "json")
    else:
        parsed = parse_action(text, reply_format(text))
    names = {Bash: "bash", View: "view", Create: "create", StrReplace: "edit", Submit: "submit"}
    if isinstance(parsed, FormatError):
        return "invalid"
    return names.get(type(parsed), type(parsed).__name__.lower())


def sampled_runs(loss_mask: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of sampled tokens (mask 1) in the response."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for i, m in enumerate(loss_mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(loss_mask)))
    return runs


def finite_numbers(values: Any) -> dict[str, float]:
    """The finite numeric entries of a timings dict (a hand-edited or odd file may hold anything)."""
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def turn_timings(record: dict[str, Any], n_replies: int) -> list[dict[str, float]] | None:
    """Each reply's timings (generation_s, env_s, total_s), or None when the record has none (files
    written before they were kept, gateway segments) or they do not pair one to one with the replies."""
    timings = record.get("turn_timings")
    if not isinstance(timings, list) or not timings or len(timings) != n_replies:
        return None
    return [finite_numbers(t) for t in timings]


def build_turns(record: dict[str, Any]) -> dict[str, Any]:
    """{"prompt": [messages before the first reply], "turns": [...], "note": str}.

    Each assistant reply's sampled ids are one run of mask-1 tokens (the template's tokens and
    the observations between replies are mask 0), so the i-th run is the i-th reply's tokens
    when the counts agree; when they do not (a text-mode engine, a harness segment holding part
    of the chat) the turns carry no token figures and the note says why. Each turn carries its
    `timings` when the record kept them (`turn_timings`, one per reply).
    """
    messages = [m for m in record.get("messages") or [] if isinstance(m, dict)]
    first_reply = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    prompt = [{"role": str(m.get("role", "")), "content": message_text(m)} for m in messages[:first_reply]]

    mask = record.get("loss_mask") or []
    logprobs = record.get("behaviour_logprobs") or []
    prompt_len = len(record.get("prompt_ids") or [])
    runs = sampled_runs(mask)
    n_replies = sum(1 for m in messages if m.get("role") == "assistant")
    aligned = len(runs) == n_replies
    note = "" if aligned or not messages else (
        f"{len(runs)} runs of sampled tokens for {n_replies} replies: per-turn token figures left out"
    )
    timings = turn_timings(record, n_replies)

    turns: list[dict[str, Any]] = []
    for msg in messages[first_reply:]:
        if msg.get("role") == "assistant":
            text = message_text(msg)
            tool_calls = msg.get("tool_calls")
            thought, action = (text.strip(), json.dumps(tool_calls, indent=1)) if tool_calls else split_reply(text)
            turn: dict[str, Any] = {
                "n": len(turns) + 1,
                "thought": thought,
                "action": action,
                "action_kind": action_kind(text, tool_calls),
                "observations": [],
            }
            if timings is not None:
                turn["timings"] = timings[len(turns)]
            if aligned:
                start, end = runs[len(turns)]
                lps = [finite_logprob(x) for x in logprobs[start:end]]
                turn.update(
                    sampled_tokens=end - start,
                    mean_logprob=sum(lps) / len(lps) if lps else None,
                    min_logprob=min(lps) if lps else None,
                    token_start=prompt_len + start,  # index into prompt_ids + response_ids
                )
            turns.append(turn)
        elif turns:
            turns[-1]["observations"].append({"role": str(msg.get("role", "")), "content": message_text(msg)})
    return {"prompt": prompt, "turns": turns, "note": note}
