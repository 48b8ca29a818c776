"""Gold patch → the env's edit actions, checked against real `git diff` output: replaying the
actions with the env's own string edit (`apply_str_replace`, exactly-once matching) must give
the patched tree, and every expert reply must parse back to its action in both formats."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent_rl.demos.expert import ScriptedEngine, expert_replies, render_action
from agent_rl.demos.gold_edits import GoldPatchError, gold_actions, parse_patch
from envs.actions import Bash, Create, StrReplace, Submit, View, apply_str_replace, parse_action
from envs.tasks import Task

REPEATED = "".join(f"def f{i}(x):\n    y = x\n    return y\n\n" for i in range(8))


def git_diff(tmp: Path, before: dict[str, str | bytes], after: dict[str, str | bytes]) -> str:
    """The real `git diff` of two trees (new, deleted and renamed files included)."""
    repo = tmp / "repo"
    repo.mkdir(parents=True)
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True).stdout  # noqa: E731
    run("init", "-q")
    for tree in (before, after):
        for p in repo.iterdir():
            if p.name != ".git":
                subprocess.run(["rm", "-rf", str(p)], check=True)
        for path, content in tree.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_bytes(content if isinstance(content, bytes) else content.encode())
        run("add", "-A")
        run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x", "--allow-empty")
    return run("diff", "-M", "--binary", "HEAD~1", "HEAD")


def replay(tree: dict[str, str], actions: list) -> dict[str, str]:
    files = dict(tree)
    for action in actions:
        if isinstance(action, StrReplace):
            files[action.path] = apply_str_replace(files[action.path], action.old, action.new, path=action.path)
        elif isinstance(action, Create):
            files[action.path] = action.content
        else:
            assert isinstance(action, Bash) and action.command.startswith("rm ")
            del files[action.command.split(" ", 1)[1]]
    return files


def check(tmp: Path, before: dict[str, str], after: dict[str, str]) -> list:
    patch = git_diff(tmp, before, after)
    actions = gold_actions(patch, before)
    assert replay(before, actions) == after
    for action in actions:
        for fmt in ("fenced", "json"):
            text = render_action(action, fmt, "thought")
            assert text is None or parse_action(text, fmt) == action
    return actions


def test_multi_hunk_edits_grow_context_until_unique(tmp_path):
    after = REPEATED.replace("def f1(x):\n    y = x\n", "def f1(x):\n    y = x + 1\n").replace(
        "def f6(x):\n    y = x\n", "def f6(x):\n    y = x * 2\n")
    assert len(parse_patch(git_diff(tmp_path / "a", {"m.py": REPEATED}, {"m.py": after}))[0].hunks) == 2
    actions = check(tmp_path / "b", {"m.py": REPEATED}, {"m.py": after})
    assert [type(a) for a in actions] == [StrReplace, StrReplace]
    # "    y = x\n" alone occurs 8 times: each edit reaches up to its own def line.
    assert actions[0].old == "def f1(x):\n    y = x\n    return y\n"  # grown below, then above
    assert actions[1].old == "def f6(x):\n    y = x\n    return y\n"


def test_multi_file_and_small_edits_keep_minimal_context(tmp_path):
    before = {"a.py": "import os\n\nA = 1\nB = 2\n", "pkg/b.py": "def g():\n    return 0\n"}
    after = {"a.py": "import os\n\nA = 10\nB = 2\n", "pkg/b.py": "def g():\n    return 1\n"}
    actions = check(tmp_path, before, after)
    assert actions == [StrReplace("a.py", "A = 1\n", "A = 10\n"), StrReplace("pkg/b.py", "    return 0\n", "    return 1\n")]


def test_new_file_deleted_file_and_deleted_lines(tmp_path):
    before = {"a.py": "x = 1\nDEBUG = True\ny = 2\n", "old.py": "gone = True\n"}
    after = {"a.py": "x = 1\ny = 2\n", "new/mod.py": "def h():\n    return 3\n"}
    actions = check(tmp_path, before, after)
    assert StrReplace("a.py", "DEBUG = True\n", "") in actions
    assert Create("new/mod.py", "def h():\n    return 3\n") in actions
    assert Bash("rm old.py") in actions


def test_empty_files_created_and_deleted(tmp_path):
    actions = check(tmp_path, {"a.py": "x = 1\n", "gone/__init__.py": ""}, {"a.py": "x = 1\n", "pkg/__init__.py": ""})
    assert sorted(map(repr, actions)) == sorted(map(repr, [Create("pkg/__init__.py", ""), Bash("rm gone/__init__.py")]))


def test_insertion_rename_and_missing_final_newline(tmp_path):
    body = "".join(f"line {i}\n" for i in range(30))
    other = "".join(f"other {i}\n" for i in range(10))
    before = {"a.py": "a\nb\nc", "big.py": body, "keep.py": other}
    after = {"a.py": "a\nB\nc", "moved.py": body.replace("line 12\n", "line 12\ninserted\n"), "kept.py": other}
    patch = git_diff(tmp_path / "p", before, after)
    assert "rename from keep.py" in patch and "similarity index 100%" in patch  # a pure rename has no hunk
    check(tmp_path, before, after)


def test_search_replace_markers_in_the_change_fall_back_to_a_whole_file_create(tmp_path):
    before = {"doc.py": 'X = """\nTitle\n=======\n"""\nY = 1\n'}
    after = {"doc.py": 'X = """\nTitle\n-------\n"""\nY = 1\n'}
    patch = git_diff(tmp_path, before, after)
    assert gold_actions(patch, before) == [StrReplace("doc.py", "=======\n", "-------\n")]
    assert render_action(StrReplace("doc.py", "=======\n", "-------\n"), "fenced", "t") is None
    task = Task(instance_id="t", repo="r", base_commit="c", problem_statement="p", patch=patch)
    replies = [parse_action(r, "fenced") for r in expert_replies(task, before, "fenced")]
    assert Create("doc.py", after["doc.py"]) in replies
    replies = [parse_action(r, "json") for r in expert_replies(task, before, "json")]
    assert StrReplace("doc.py", "=======\n", "-------\n") in replies


def test_binary_and_empty_patches_are_refused(tmp_path):
    patch = git_diff(tmp_path, {"a.bin": b"\x00\x01"}, {"a.bin": b"\x00\x02"})
    with pytest.raises(GoldPatchError, match="binary"):
        gold_actions(patch, {})
    with pytest.raises(GoldPatchError, match="no file"):
        gold_actions("", {})
    with pytest.raises(GoldPatchError, match="does not match"):
        gold_actions(git_diff(tmp_path / "b", {"a.py": "x\n"}, {"a.py": "y\n"}), {"a.py": "z\n"})


def test_script_views_edits_tests_and_submits(tmp_path):
    before = {"pkg/m.py": REPEATED}
    after = {"pkg/m.py": REPEATED.replace("def f3(x):\n    y = x\n", "def f3(x):\n    y = -x\n")}
    task = Task(instance_id="t", repo="r", base_commit="c", problem_statement="p", patch=git_diff(tmp_path, before, after),
                FAIL_TO_PASS=["tests/test_hidden.py::test_a"], PASS_TO_PASS=["tests/test_m.py::test_b"],
                test_files=["tests/test_hidden.py"])
    for fmt in ("fenced", "json"):
        actions = [parse_action(r, fmt) for r in expert_replies(task, before, fmt)]
        assert isinstance(actions[0], View) and actions[0].path == "pkg/m.py"
        assert isinstance(actions[1], StrReplace)
        assert isinstance(actions[2], Bash) and "tests/test_m.py" in actions[2].command and "hidden" not in actions[2].command
        assert actions[3] == Submit()


class _Tok:
    """A unit double of the tokenizer slice ScriptedEngine needs (one id per character)."""

    all_special_ids = [0]
    chat_template = "x"
    eos_token_id = 0

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<{m['role']}>{m['content']}\x00" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def encode(self, text, add_special_tokens=False):
        return [0 if ch == "\x00" else ord(ch) for ch in text]

    def decode(self, ids, **_):
        return "".join("\x00" if i == 0 else chr(i) for i in ids)


async def test_scripted_engine_returns_the_script_then_refuses():
    from agent_rl.engines.base import EngineError, SamplingParams
    from agent_rl.engines.capabilities import GENERATE_TOKEN_IDS, capabilities

    engine = ScriptedEngine(["ab", "c"], _Tok())
    assert GENERATE_TOKEN_IDS in capabilities(engine)
    first = await engine.generate([1], SamplingParams(max_tokens=10))
    assert first.token_ids == [97, 98, 0] and first.logprobs == [0.0] * 3 and first.finish_reason == "stop"
    with pytest.raises(EngineError, match="max_tokens=1"):
        await engine.generate([1], SamplingParams(max_tokens=1))
    with pytest.raises(EngineError, match="only 2 replies"):
        await engine.generate([1], SamplingParams(max_tokens=10))


def test_cli_refuses_a_missing_task_file(tmp_path, capsys):
    from agent_rl.cli import main

    assert main(["demos", "--tasks", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "agent-rl demos: error" in capsys.readouterr().err
