"""Action parsing and the string side of edits: pure functions, no Docker."""
from __future__ import annotations

import json

import pytest

from envs.actions import (
    Bash,
    Create,
    EditError,
    FormatError,
    StrReplace,
    Submit,
    View,
    apply_str_replace,
    format_instructions,
    numbered_lines,
    parse_action,
)

F = "```"


def fenced(tag: str, body: str, fence: str = F) -> str:
    return f"{fence}{tag}\n{body}\n{fence}"


# ---------------------------------------------------------------- fenced: well-formed


def test_bash_block_with_thought_around_it():
    text = "I'll look around first.\n" + fenced("bash", "ls -la && cat setup.py") + "\nThen decide."
    assert parse_action(text) == Bash("ls -la && cat setup.py")


def test_multiline_bash_and_sh_alias():
    assert parse_action(fenced("sh", "cd src\npython -m pytest -q")) == Bash("cd src\npython -m pytest -q")


@pytest.mark.parametrize(
    "text",
    [fenced("submit", ""), fenced("bash", "submit"), "All done. <submit/>", "done <submit>", F + "submit\n" + F],
)
def test_submit_spellings(text):
    assert parse_action(text) == Submit()


def test_view_with_path_in_info_string_and_range():
    assert parse_action(fenced("view src/pkg/mod.py", "10-40")) == View("src/pkg/mod.py", (10, 40))
    assert parse_action(fenced("view src/pkg/mod.py", "lines 5:-1")) == View("src/pkg/mod.py", (5, -1))


def test_view_with_path_on_first_line_and_no_range():
    assert parse_action(fenced("view", "README.md")) == View("README.md")


def test_create_keeps_content_and_adds_final_newline():
    action = parse_action(fenced("create pkg/new.py", "def f():\n    return 1"))
    assert action == Create("pkg/new.py", "def f():\n    return 1\n")


def test_create_with_path_on_first_line():
    assert parse_action(fenced("create", "a.txt\nhello")) == Create("a.txt", "hello\n")


def test_create_content_with_inner_fence_uses_longer_fence():
    body = "# Title\n```python\nprint(1)\n```"
    action = parse_action(fenced("create docs/x.md", body, fence="````"))
    assert action == Create("docs/x.md", body + "\n")


def test_edit_search_replace():
    body = "<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE"
    assert parse_action(fenced("edit calc.py", body)) == StrReplace("calc.py", "    return a - b\n", "    return a + b\n")


def test_edit_may_delete_lines():
    body = "<<<<<<< SEARCH\nprint('debug')\n=======\n>>>>>>> REPLACE"
    assert parse_action(fenced("edit m.py", body)) == StrReplace("m.py", "print('debug')\n", "")


def test_non_action_code_blocks_are_ignored_next_to_one_action():
    text = fenced("python", "x = 1") + "\n" + fenced("bash", "python -c 'print(1)'")
    assert parse_action(text) == Bash("python -c 'print(1)'")


# ---------------------------------------------------------------- fenced: malformed → FormatError


@pytest.mark.parametrize(
    "text, needle",
    [
        ("I think the bug is in foo.py", "no action block"),
        ("", "no action block"),
        (fenced("bash", "ls") + "\n" + fenced("bash", "pwd"), "2 action blocks"),
        (fenced("bash", "ls") + "\n" + fenced("submit", ""), "2 action blocks"),
        ("```bash\nls -la\n", "never closed"),
        (fenced("python", "print(1)"), "'python'"),
        (fenced("bash", "   "), "empty"),
        (fenced("view", ""), "needs a file path"),
        (fenced("view a.py", "ten to twenty"), "START-END"),
        (fenced("view a.py", "30-10"), "invalid"),
        (fenced("edit a.py", "just replace x with y"), "found no"),
        (fenced("edit a.py", "<<<<<<< SEARCH\n=======\nnew\n>>>>>>> REPLACE"), "SEARCH part"),
        (
            fenced("edit a.py", "<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n<<<<<<< SEARCH\nc\n=======\nd\n>>>>>>> REPLACE"),
            "found 2",
        ),
    ],
)
def test_fenced_format_errors_explain_the_format(text, needle):
    result = parse_action(text, "fenced")
    assert isinstance(result, FormatError)
    assert needle in result.message
    assert "```bash" in result.message  # always says what is expected


def test_parse_never_raises_on_weird_text():
    for text in ["\x00\x01", "```", "``````", "````bash\n```\n", "<submit", "\ufffd" * 10, "```bash\n```"]:
        assert isinstance(parse_action(text), (FormatError, Bash, Submit))


def test_non_string_action_is_a_format_error():
    assert isinstance(parse_action(None), FormatError)  # type: ignore[arg-type]


def test_unknown_format_is_a_caller_error():
    with pytest.raises(ValueError, match="unknown action format 'xml'"):
        parse_action("ls", "xml")


# ---------------------------------------------------------------- json tool calls


def call(name: str, **arguments: object) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def test_json_tools():
    assert parse_action(call("bash", command="ls"), "json") == Bash("ls")
    assert parse_action(call("view", path="a.py"), "json") == View("a.py")
    assert parse_action(call("view", path="a.py", view_range=[3, -1]), "json") == View("a.py", (3, -1))
    assert parse_action(call("create", path="b.py", content="x\n"), "json") == Create("b.py", "x\n")
    assert parse_action(call("str_replace", path="c.py", old_str="a", new_str="b"), "json") == StrReplace("c.py", "a", "b")
    assert parse_action("Done.\n" + call("submit"), "json") == Submit()


def test_json_bare_object_openai_wrapper_and_string_arguments():
    bare = json.dumps({"name": "bash", "arguments": {"command": "pwd"}})
    assert parse_action(bare, "json") == Bash("pwd")
    assert parse_action(f"```json\n{bare}\n```", "json") == Bash("pwd")
    wrapped = json.dumps({"type": "function", "function": {"name": "bash", "arguments": json.dumps({"command": "id"})}})
    assert parse_action(f"<tool_call>{wrapped}</tool_call>", "json") == Bash("id")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("let me think", "no tool call"),
        (call("bash", command="ls") + call("bash", command="pwd"), "2 tool calls"),
        ("<tool_call>{\"name\": \"bash\"", "never closed"),
        ("<tool_call>{name: bash}</tool_call>", "not valid JSON"),
        ("<tool_call>[1, 2]</tool_call>", "JSON object"),
        (call("rm_rf", path="/"), "unknown tool 'rm_rf'"),
        (call("bash"), "needs a string argument 'command'"),
        (call("bash", command=3), "needs a string argument 'command'"),
        (call("str_replace", path="a", old_str="", new_str="b"), "old_str is empty"),
        (call("view", path="a", view_range=[1]), "two integers"),
        (call("view", path="a", view_range=[0, 5]), "invalid"),
        ('<tool_call>{"name": "bash", "arguments": "{oops"}</tool_call>', "not valid JSON"),
    ],
)
def test_json_format_errors(text, needle):
    result = parse_action(text, "json")
    assert isinstance(result, FormatError)
    assert needle in result.message
    assert "<tool_call>" in result.message


# ---------------------------------------------------------------- edits and views


def test_apply_str_replace_exactly_once():
    assert apply_str_replace("a = 1\nb = 2\n", "b = 2", "b = 3") == "a = 1\nb = 3\n"


def test_apply_str_replace_missing_and_ambiguous():
    with pytest.raises(EditError, match="does not occur in m.py"):
        apply_str_replace("x", "y", "z", path="m.py")
    with pytest.raises(EditError, match=r"occurs 2 times in m.py \(lines 1, 3\)"):
        apply_str_replace("x = 1\ny\nx = 1\n", "x = 1", "x = 2", path="m.py")


def test_numbered_lines_full_and_range():
    text = "".join(f"line{i}\n" for i in range(1, 13))
    assert numbered_lines(text).splitlines()[0] == " 1\tline1"
    assert numbered_lines(text, (11, -1)) == "11\tline11\n12\tline12"
    assert numbered_lines(text, (2, 3)) == "2\tline2\n3\tline3"
    with pytest.raises(EditError, match="has 12 lines"):
        numbered_lines(text, (20, 30), path="f.py")


@pytest.mark.parametrize("fmt", ["fenced", "json"])
def test_instructions_name_every_action(fmt):
    text = format_instructions(fmt, workdir="/work")
    assert "/work" in text
    for word in (["bash", "view", "create", "edit", "submit"] if fmt == "fenced" else ["bash", "view", "create", "str_replace", "submit"]):
        assert word in text


def test_instructions_examples_parse_as_documented():
    """The fenced examples in the instructions are themselves valid actions."""
    text = format_instructions("fenced")
    blocks = text.split("\n\n")
    edit = next(b for b in blocks if b.startswith("```edit"))
    assert isinstance(parse_action(edit), StrReplace)
    assert parse_action("```submit\n```") == Submit()
