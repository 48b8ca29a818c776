"""An episode's chat → turns a person can read: the prompt, then per assistant reply its thought,
its action and the observation that answered it, with the reply's own sampled tokens.

The action is located here only to show it apart from the thought; what the action *is* (bash,
view, edit, submit or a format error) is decided by the environment's own parser
(`envs.actions.parse_action`), so the viewer never disagrees with what the episode did.
"""
from __future__ import annotations

import json
import re
from typing import Any, Sequence

from agent_rl.view.tokens import finite_logprob

_FENCE_OPEN = re.compile(r"^[ \t]{0,3}(`{3,})[ \t]*([^`\n]*)$", re.MULTILINE)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_SUBMIT_TAG = re.compile(r"<submit\s*/?>", re.IGNORECASE)


def message_text(message: dict[str, Any]) -> str:
    """A message's text; OpenAI content parts are joined, a missing content is ''."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def split_reply(text: str) -> tuple[str, str]:
    """(thought, action text): the first fenced block, `<tool_call>` or `<submit/>` is the
    action, everything around it the thought; a reply that is one JSON object is all action."""
    call = _TOOL_CALL.search(text)
    if call:
        return _around(text, call.start(), call.end()), call.group(1).strip()
    opening = _FENCE_OPEN.search(text)
    if opening:
        fence = opening.group(1)
        closing = re.compile(rf"^[ \t]{{0,3}}`{{{len(fence)},}}[ \t]*$", re.MULTILINE)
        close = closing.search(text, opening.end())
        end = close.end() if close else len(text)
        return _around(text, opening.start(), end), text[opening.start():end].strip()
    submit = _SUBMIT_TAG.search(text)
    if submit:
        return _around(text, submit.start(), submit.end()), submit.group(0)
    if text.strip().startswith("{"):
        return "", text.strip()
    return text.strip(), ""


def _around(text: str, start: int, end: int) -> str:
    before, after = text[:start].strip(), text[end:].strip()
    return f"{before}\n\n{after}".strip() if after else before


def action_kind(text: str, tool_calls: Any = None) -> str:
    """bash | view | create | edit | submit | invalid, as the environment would parse it."""
    from envs.actions import Bash, Create, FormatError, StrReplace, Submit, View, parse_action

    if tool_calls:
        # A gateway session's OpenAI tool call: the env parses the same call shape.
        first = tool_calls[0] if isinstance(tool_calls, list) else tool_calls
        parsed = parse_action(json.dumps(first), "json")
    else:
        stripped = text.strip()
        fmt = "json" if "<tool_call>" in text or stripped.startswith("{") else "fenced"
        parsed = parse_action(text, fmt)
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


def build_turns(record: dict[str, Any]) -> dict[str, Any]:
    """{"prompt": [messages before the first reply], "turns": [...], "note": str}.

    Each assistant reply's sampled ids are one run of mask-1 tokens (the template's tokens and
    the observations between replies are mask 0), so the i-th run is the i-th reply's tokens
    when the counts agree; when they do not (a text-mode engine, a harness segment holding part
    of the chat) the turns carry no token figures and the note says why.
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
