"""Model text → one action, or a FormatError whose message becomes the next observation.

Two formats, chosen per environment:

* ``fenced`` (mini-swe-agent style, easy for small models): exactly one action block per
  turn. The block's language tag names the action::

      ```bash            a shell command (the body is run with bash)
      ```view PATH       show a file with line numbers (optional body: "START-END")
      ```create PATH     write the body as the whole new content of PATH
      ```edit PATH       replace one exact occurrence, written as
                         <<<<<<< SEARCH / old lines / ======= / new lines / >>>>>>> REPLACE
      ```submit          finish (also: a ```bash block holding just `submit`, or <submit/>)

  PATH may instead be the first line of the body. A body that itself contains ``` is
  fenced with four or more backticks, like Markdown.

* ``json`` (OpenAI/Qwen tool calls): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
  or a bare JSON object of that shape. Tools: bash(command), view(path, view_range?),
  create(path, content), str_replace(path, old_str, new_str), submit().

Everything here is pure: parsing and the string side of edits. Running an action in a
sandbox is the environment's job.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Union

ACTION_FORMATS = ("fenced", "json")


@dataclass(frozen=True)
class Bash:
    command: str


@dataclass(frozen=True)
class View:
    path: str
    view_range: tuple[int, int] | None = None  # 1-based, inclusive; end -1 means "to the end"


@dataclass(frozen=True)
class Create:
    path: str
    content: str


@dataclass(frozen=True)
class StrReplace:
    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Submit:
    pass


Action = Union[Bash, View, Create, StrReplace, Submit]


@dataclass(frozen=True)
class FormatError:
    """The model's text held no valid action (or several). `message` is shown to the model."""

    message: str


# --------------------------------------------------------------------------------------
# Instructions shown to the model: the single source of truth for each syntax.
# --------------------------------------------------------------------------------------

FENCED_INSTRUCTIONS = """\
Reply with a short thought, then EXACTLY ONE action block. Action blocks:

```bash
<one shell command; runs in {workdir}; cwd and exported variables persist>
```

```view path/to/file.py
10-40
```
(shows a file with line numbers; the range line is optional)

```create path/to/new_file.py
<the whole content of the file>
```

```edit path/to/file.py
<<<<<<< SEARCH
<exact lines currently in the file; must occur exactly once>
=======
<the lines that replace them>
>>>>>>> REPLACE
```

When the fix is done, reply with:

```submit
```"""

JSON_INSTRUCTIONS = """\
Call EXACTLY ONE tool per reply, written as
<tool_call>{{"name": "<tool>", "arguments": {{...}}}}</tool_call>
Tools:
- bash {{"command": str}}: run a shell command in {workdir} (cwd and exported variables persist)
- view {{"path": str, "view_range": [start, end] (optional, 1-based, end -1 = to the end)}}
- create {{"path": str, "content": str}}: write a whole file
- str_replace {{"path": str, "old_str": str, "new_str": str}}: old_str must occur exactly once
- submit {{}}: finish when the fix is done"""


def format_instructions(fmt: str, *, workdir: str = "/testbed") -> str:
    _check_format(fmt)
    template = FENCED_INSTRUCTIONS if fmt == "fenced" else JSON_INSTRUCTIONS
    return template.format(workdir=workdir)


def _check_format(fmt: str) -> None:
    if fmt not in ACTION_FORMATS:
        raise ValueError(f"unknown action format {fmt!r}; expected one of {', '.join(ACTION_FORMATS)}")


def parse_action(text: str, fmt: str = "fenced") -> Action | FormatError:
    """Parse one turn of model output. Never raises on model text; bad formats raise ValueError."""
    _check_format(fmt)
    if not isinstance(text, str):
        return FormatError(f"expected text, got {type(text).__name__}")
    if fmt == "fenced":
        return _parse_fenced(text)
    return _parse_json(text)


# --------------------------------------------------------------------------------------
# Fenced blocks
# --------------------------------------------------------------------------------------

_BASH_TAGS = ("bash", "sh", "shell", "console")
_EDIT_TAGS = ("edit", "str_replace", "replace")
_ACTION_TAGS = _BASH_TAGS + ("view", "create") + _EDIT_TAGS + ("submit",)
_OPEN_FENCE = re.compile(r"^[ \t]{0,3}(`{3,})[ \t]*([^`\n]*)$")
_SUBMIT_TAG = re.compile(r"<submit\s*/?>", re.IGNORECASE)


@dataclass(frozen=True)
class _Block:
    tag: str
    arg: str  # the rest of the info string (a path, for file actions)
    body: str
    span: tuple[int, int]  # [start, end) characters, opening fence line through closing fence line


def _fenced_blocks(text: str) -> tuple[list[_Block], _Block | None]:
    """Markdown-style fenced blocks, and the block left unclosed (running to the end of the
    text, where reading stops), if any."""
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    blocks: list[_Block] = []
    i = 0
    while i < len(lines):
        opening = _OPEN_FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, info = opening.group(1), opening.group(2).strip()
        tag, _, arg = info.partition(" ")
        closing = re.compile(rf"^[ \t]{{0,3}}`{{{len(fence)},}}[ \t]*$")
        for j in range(i + 1, len(lines)):
            if closing.match(lines[j]):
                blocks.append(_Block(tag.lower(), arg.strip(), "\n".join(lines[i + 1 : j]),
                                     (starts[i], starts[j] + len(lines[j]))))
                i = j + 1
                break
        else:
            return blocks, _Block(tag.lower(), arg.strip(), "\n".join(lines[i + 1:]), (starts[i], len(text)))
    return blocks, None


def fenced_action_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of what the fenced format reads as actions: every block
    with an action tag (fences included; one left unclosed runs to the end), and `<submit/>`
    tags outside them. The analysis of planning vs execution tokens uses exactly these."""
    blocks, unclosed = _fenced_blocks(text)
    spans = [b.span for b in [*blocks, *([unclosed] if unclosed else [])] if b.tag in _ACTION_TAGS]
    inside = list(spans)
    spans += [(m.start(), m.end()) for m in _SUBMIT_TAG.finditer(text)
              if not any(s <= m.start() < e for s, e in inside)]
    return sorted(spans)


_FENCED_HINT = (
    "Reply with exactly one action block: ```bash, ```view PATH, ```create PATH, "
    "```edit PATH (with <<<<<<< SEARCH / ======= / >>>>>>> REPLACE) or ```submit."
)
_JSON_HINT = (
    'Call exactly one tool per reply: <tool_call>{"name": "bash", "arguments": {"command": "ls"}}</tool_call>. '
    "Tools: bash, view, create, str_replace, submit."
)


def _format_error(problem: str, hint: str) -> FormatError:
    return FormatError(f"Format error: {problem}\n{hint}")


def _fenced_error(problem: str) -> FormatError:
    return _format_error(problem, _FENCED_HINT)


def _parse_fenced(text: str) -> Action | FormatError:
    blocks, unclosed = _fenced_blocks(text)
    actions = [b for b in blocks if b.tag in _ACTION_TAGS]
    if not actions:
        if _SUBMIT_TAG.search(text):
            return Submit()
        if unclosed is not None:
            return _fenced_error("a ``` block was opened but never closed.")
        untagged = [b for b in blocks if b.tag not in _ACTION_TAGS]
        if untagged:
            tags = ", ".join(repr(b.tag or "<none>") for b in untagged)
            return _fenced_error(f"found code block(s) tagged {tags}, but none is an action.")
        return _fenced_error("no action block found.")
    if len(actions) > 1:
        return _fenced_error(f"found {len(actions)} action blocks; exactly one is allowed per reply.")
    return _block_to_action(actions[0])


def _path_and_body(block: _Block) -> tuple[str, str] | FormatError:
    if block.arg:
        return block.arg, block.body
    first, _, rest = block.body.partition("\n")
    if not first.strip():
        return _fenced_error(f"```{block.tag} needs a file path: ```{block.tag} path/to/file")
    return first.strip(), rest


def _block_to_action(block: _Block) -> Action | FormatError:
    if block.tag == "submit":
        return Submit()
    if block.tag in _BASH_TAGS:
        command = block.body.strip()
        if not command:
            return _fenced_error("the ```bash block is empty.")
        if command == "submit":
            return Submit()
        return Bash(command)
    parsed = _path_and_body(block)
    if isinstance(parsed, FormatError):
        return parsed
    path, body = parsed
    if block.tag == "view":
        return _view_from_text(path, body.strip())
    if block.tag == "create":
        return Create(path, body + "\n" if body and not body.endswith("\n") else body)
    return _edit_from_text(path, body)


_RANGE = re.compile(r"^(?:lines?\s*)?(\d+)\s*(?:-|:|,|\s)\s*(-?\d+)$", re.IGNORECASE)


def _view_from_text(path: str, range_text: str) -> View | FormatError:
    if not range_text:
        return View(path)
    match = _RANGE.match(range_text)
    if not match:
        return _fenced_error(f"view range {range_text!r} is not of the form START-END, e.g. 10-40.")
    return _checked_view(path, int(match.group(1)), int(match.group(2)), _fenced_error)


def _checked_view(path: str, start: int, end: int, error: Any) -> View | FormatError:
    if start < 1 or (end != -1 and end < start):
        return error(f"view range [{start}, {end}] is invalid: need 1 <= start <= end (or end = -1).")
    return View(path, (start, end))


_SEARCH_REPLACE = re.compile(
    r"^<{5,}[ \t]*SEARCH[ \t]*\n(.*?)^={5,}[ \t]*\n(.*?)^>{5,}[ \t]*REPLACE[ \t]*$",
    re.DOTALL | re.MULTILINE,
)


def _edit_from_text(path: str, body: str) -> StrReplace | FormatError:
    matches = list(_SEARCH_REPLACE.finditer(body + "\n"))
    if len(matches) != 1:
        what = "no" if not matches else f"{len(matches)}"
        return _fenced_error(
            f"```edit needs exactly one <<<<<<< SEARCH / ======= / >>>>>>> REPLACE section; found {what}."
        )
    old, new = matches[0].group(1), matches[0].group(2)
    if not old:
        return _fenced_error("the SEARCH part of the edit is empty; copy the exact lines to replace.")
    return StrReplace(path, old, new)


# --------------------------------------------------------------------------------------
# JSON tool calls
# --------------------------------------------------------------------------------------

_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_JSON_TOOLS = {
    "bash": ("command",),
    "view": ("path",),
    "create": ("path", "content"),
    "str_replace": ("path", "old_str", "new_str"),
    "submit": (),
}


def _json_error(problem: str) -> FormatError:
    return _format_error(problem, _JSON_HINT)


def _parse_json(text: str) -> Action | FormatError:
    calls = _TOOL_CALL.findall(text)
    if len(calls) > 1:
        return _json_error(f"found {len(calls)} tool calls; exactly one is allowed per reply.")
    if calls:
        raw = calls[0].strip()
    elif "<tool_call>" in text:
        return _json_error("<tool_call> was opened but never closed with </tool_call>.")
    else:
        raw = _strip_json_fence(text.strip())
        if not raw.startswith("{"):
            return _json_error("no tool call found.")
    try:
        call = json.loads(raw)
    except json.JSONDecodeError as exc:
        return _json_error(f"the tool call is not valid JSON ({exc.msg} at position {exc.pos}).")
    return _call_to_action(call)


def _strip_json_fence(text: str) -> str:
    match = re.fullmatch(r"```(?:json)?[ \t]*\n(.*)\n```", text, re.DOTALL)
    return match.group(1).strip() if match else text


def _call_to_action(call: Any) -> Action | FormatError:
    if not isinstance(call, dict):
        return _json_error("the tool call must be a JSON object with 'name' and 'arguments'.")
    if "function" in call and isinstance(call["function"], dict):
        call = call["function"]  # OpenAI's {"type": "function", "function": {...}} wrapper
    name = call.get("name")
    if name not in _JSON_TOOLS:
        return _json_error(f"unknown tool {name!r}.")
    args = call.get("arguments", call.get("parameters", {}))
    if isinstance(args, str):  # OpenAI sends arguments as a JSON-encoded string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return _json_error(f"the arguments of {name} are a string that is not valid JSON.")
    if not isinstance(args, dict):
        return _json_error(f"the arguments of {name} must be a JSON object.")
    for key in _JSON_TOOLS[name]:
        if not isinstance(args.get(key), str):
            return _json_error(f"tool {name} needs a string argument {key!r}.")
    if name == "bash":
        command = args["command"].strip()
        return Bash(command) if command else _json_error("the bash command is empty.")
    if name == "view":
        return _json_view(args)
    if name == "create":
        return Create(args["path"], args["content"])
    if name == "str_replace":
        if not args["old_str"]:
            return _json_error("old_str is empty; copy the exact text to replace.")
        return StrReplace(args["path"], args["old_str"], args["new_str"])
    return Submit()


def _json_view(args: dict[str, Any]) -> View | FormatError:
    view_range = args.get("view_range")
    if view_range is None:
        return View(args["path"])
    if (
        not isinstance(view_range, list)
        or len(view_range) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in view_range)
    ):
        return _json_error("view_range must be a list of two integers [start, end].")
    return _checked_view(args["path"], view_range[0], view_range[1], _json_error)


# --------------------------------------------------------------------------------------
# The string side of file actions (the env does the I/O)
# --------------------------------------------------------------------------------------


class EditError(ValueError):
    """An edit that cannot be applied; the message is shown to the model."""


def apply_str_replace(content: str, old: str, new: str, *, path: str = "the file") -> str:
    """Replace the single occurrence of `old`; zero or several occurrences are errors."""
    count = content.count(old)
    if count == 0:
        raise EditError(
            f"No replacement was made: the search text does not occur in {path}. "
            "Copy it exactly (including indentation) from a fresh view of the file."
        )
    if count > 1:
        lines = [content[: m.start()].count("\n") + 1 for m in re.finditer(re.escape(old), content)]
        raise EditError(
            f"No replacement was made: the search text occurs {count} times in {path} "
            f"(lines {', '.join(map(str, lines))}); include more surrounding lines to make it unique."
        )
    return content.replace(old, new, 1)


def numbered_lines(content: str, view_range: tuple[int, int] | None = None, *, path: str = "") -> str:
    """`cat -n`-style listing of a file or a 1-based inclusive range of it."""
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    start, end = 1, len(lines)
    if view_range is not None:
        start, end = view_range
        if end == -1 or end > len(lines):
            end = len(lines)
        if start > max(len(lines), 1):
            raise EditError(f"view range starts at line {start}, but {path or 'the file'} has {len(lines)} lines.")
    width = len(str(end)) if end else 1
    return "\n".join(f"{n:>{width}}\t{lines[n - 1]}" for n in range(start, end + 1))
