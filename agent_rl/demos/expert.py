"""The scripted expert: a gold patch → the replies a good agent would write, and an engine
that "samples" them.

The script: view the region of every file the gold patch changes, make the change with the
env's edit actions (`gold_edits`), run the repository's visible tests, submit. Each reply is
a one-line thought plus one action in the env's action format, and is checked by parsing it
back with the env's own parser (`envs.actions.parse_action`), so a reply the env would
misread never reaches an episode. `ScriptedEngine` implements the `Generates` capability: it
returns the tokenized next reply (plus the end-of-turn token a model samples) with behaviour
logprobs 0.0, so a demonstration goes through exactly the prompts, chat template, action
format and env a trained policy sees.
"""
from __future__ import annotations

import json
import re
import shlex
from typing import Any, Mapping

from agent_rl.demos.gold_edits import FileDiff, GoldPatchError, apply_hunks, edit_actions, parse_patch
from agent_rl.engines.base import EngineError, Generation, SamplingParams
from agent_rl.rollout.chat_template import ChatTokenizer, encode, end_of_turn_ids
from envs.actions import Action, Bash, Create, StrReplace, Submit, View, parse_action
from envs.patch_screen import hidden_test_files
from envs.tasks import Task

VIEW_MARGIN = 3  # lines shown around the changed region
MAX_TEST_FILES = 5


def _fence(body: str) -> str:
    # A body line made only of backticks would close a ``` fence: use a longer one.
    runs = [len(m.group(1)) for m in re.finditer(r"(?m)^[ \t]{0,3}(`{3,})[ \t]*$", body)]
    return "`" * max([3, *(n + 1 for n in runs)])


def _fenced(action: Action) -> str:
    if isinstance(action, Submit):
        return "```submit\n```"
    if isinstance(action, Bash):
        body, head = action.command, "bash"
    elif isinstance(action, View):
        body = f"{action.view_range[0]}-{action.view_range[1]}" if action.view_range else ""
        head = f"view {action.path}"
    elif isinstance(action, Create):
        body, head = action.content.removesuffix("\n"), f"create {action.path}"
    else:
        assert isinstance(action, StrReplace)
        body = f"<<<<<<< SEARCH\n{action.old}=======\n{action.new}>>>>>>> REPLACE"
        head = f"edit {action.path}"
    fence = _fence(body)
    return f"{fence}{head}\n{body}\n{fence}" if body else f"{fence}{head}\n{fence}"


def _tool_call(action: Action) -> str:
    if isinstance(action, Submit):
        name, args = "submit", {}
    elif isinstance(action, Bash):
        name, args = "bash", {"command": action.command}
    elif isinstance(action, View):
        name, args = "view", {"path": action.path, **({"view_range": list(action.view_range)} if action.view_range else {})}
    elif isinstance(action, Create):
        name, args = "create", {"path": action.path, "content": action.content}
    else:
        assert isinstance(action, StrReplace)
        name, args = "str_replace", {"path": action.path, "old_str": action.old, "new_str": action.new}
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "</tool_call>"


def render_action(action: Action, fmt: str, thought: str) -> str | None:
    """`thought` and `action` as one reply in `fmt`; None when the env would parse it as
    something else (e.g. a fenced edit whose text holds a `=======` line)."""
    text = f"{thought}\n" + (_fenced(action) if fmt == "fenced" else _tool_call(action))
    parsed = parse_action(text, fmt)
    if parsed == action:
        return text
    # A fenced `create` always ends the file with a newline: harmless for a file that had none.
    if isinstance(action, Create) and parsed == Create(action.path, action.content + "\n"):
        return text
    return None


def _view(diff: FileDiff) -> View:
    first = min((h.old_start for h in diff.hunks), default=1)
    last = max((h.old_start + len(h.old) - 1 for h in diff.hunks), default=first)
    return View(diff.old_path or "", (max(1, first - VIEW_MARGIN), max(first, last) + VIEW_MARGIN))


def _thought(action: Action) -> str:
    if isinstance(action, View):
        return f"Let me look at the code in {action.path} that the issue is about."
    if isinstance(action, StrReplace):
        return f"I will fix the code in {action.path}."
    if isinstance(action, Create):
        return f"I will write {action.path} with the fix."
    if isinstance(action, Bash) and action.command.startswith("rm "):
        return "This file is no longer needed; I remove it."
    return "Now the change is in place; let me run the existing tests."


def _file_replies(diff: FileDiff, base: Mapping[str, str], fmt: str) -> list[str]:
    actions = edit_actions(diff, base)
    replies = [render_action(a, fmt, _thought(a)) for a in actions]
    if all(r is not None for r in replies):
        return [r for r in replies if r is not None]
    # Some edit cannot be written in this format: rewrite the whole file instead.
    whole = Create(diff.path, apply_hunks(base.get(diff.old_path or "", ""), diff.hunks, diff.path))
    reply = render_action(whole, fmt, _thought(whole))
    if reply is None:
        raise GoldPatchError(f"{diff.path}: the change cannot be written as a {fmt} action")
    return [reply] + [r for a, r in zip(actions, replies) if isinstance(a, Bash) and r is not None]


def visible_test_command(task: Task) -> str | None:
    """Run the target tests' files that the agent's repository has (not the hidden ones)."""
    hidden = set(hidden_test_files(task))
    files = sorted({t.split("::")[0] for t in [*task.PASS_TO_PASS, *task.FAIL_TO_PASS]} - hidden)
    if not files:
        return None
    chosen = " ".join(shlex.quote(f) for f in files[:MAX_TEST_FILES])
    # No bytecode or cache files: the repo may not ignore them, and they would enter the diff.
    return f"PYTHONDONTWRITEBYTECODE=1 {task.test_cmd} -q -p no:cacheprovider {chosen} 2>&1 | tail -n 15"


STYLES = ("thorough", "direct")


def expert_replies(task: Task, base: Mapping[str, str], fmt: str, style: str = "thorough") -> list[str]:
    """The expert's whole episode for `task`.

    `thorough`: view the code, edit, run the visible tests, submit (what a careful agent does on
    an issue). `direct`: edit, submit. The direct script suits tasks whose statement already
    shows the code (the floor tier): half the turns, so SFT and rollouts on it cost half."""
    if style not in STYLES:
        raise ValueError(f"unknown demo style {style!r}; expected one of {STYLES}")
    if not task.patch.strip():
        raise GoldPatchError(f"task {task.instance_id!r} has no gold patch")
    diffs = parse_patch(task.patch)
    if not diffs:
        raise GoldPatchError("the gold patch changes no file")
    replies = []
    for diff in diffs if style == "thorough" else ():
        if diff.old_path is not None and diff.hunks:
            view = _view(diff)
            replies.append(render_action(view, fmt, _thought(view)) or "")
    for diff in diffs:
        replies += _file_replies(diff, base, fmt)
    command = visible_test_command(task) if style == "thorough" else None
    if command:
        replies.append(render_action(Bash(command), fmt, _thought(Bash(command))) or "")
    replies.append(render_action(Submit(), fmt, "The fix is done; submitting.") or "")
    if not all(replies):
        raise GoldPatchError(f"task {task.instance_id!r}: a reply could not be written as a {fmt} action")
    return replies


class ScriptedEngine:
    """`Generates` for one episode: the n-th call returns the n-th scripted reply, tokenized,
    ending with the token a model samples to end its turn; behaviour logprobs are 0.0."""

    def __init__(self, replies: list[str], tokenizer: ChatTokenizer, name: str = "scripted-expert") -> None:
        self.name = name
        self.replies = list(replies)
        self.tokenizer = tokenizer
        self._end = end_of_turn_ids(tokenizer)
        self.calls = 0

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams, **_: Any) -> Generation:
        """The next reply; an EngineError (the episode's error) once the script is spent or
        when a reply does not fit `sampling.max_tokens`."""
        if self.calls >= len(self.replies):
            raise EngineError(f"the expert's script has only {len(self.replies)} replies")
        text = self.replies[self.calls]
        self.calls += 1
        ids = encode(self.tokenizer, text) + self._end
        if len(ids) > sampling.max_tokens:
            raise EngineError(
                f"expert reply {self.calls} needs {len(ids)} tokens, more than max_tokens={sampling.max_tokens}; "
                "raise agent.max_tokens_per_turn / agent.max_total_tokens"
            )
        return Generation(token_ids=ids, logprobs=[0.0] * len(ids), finish_reason="stop", text=text)

    async def close(self) -> None:
        """Nothing to release."""
