"""A tiny real task, made with real git, for the environment and grading tests.

`calc.ops.add` subtracts (the bug). Visible test: tests/test_ops.py (sub works). Hidden
tests (the test patch): tests/test_issue_add.py, where test_add_positive fails on the
bug and test_add_zero passes either way. The repository also carries a *later* commit
with the fix on a side branch, so tests can check that history stops at the base commit.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from envs.tasks import Task

BUGGY_OPS = '''"""Arithmetic helpers."""


def add(a, b):
    return a - b


def sub(a, b):
    return a - b
'''

FIXED_OPS = BUGGY_OPS.replace("def add(a, b):\n    return a - b", "def add(a, b):\n    return a + b")

VISIBLE_TEST = '''from calc.ops import sub


def test_sub():
    assert sub(5, 3) == 2
'''

HIDDEN_TEST = '''from calc.ops import add

HIDDEN_MARKER = "hidden-test-7f3a9c"


def test_add_positive():
    assert add(2, 3) == 5


def test_add_zero():
    assert add(4, 0) == 4
'''

HIDDEN_TEST_PATH = "tests/test_issue_add.py"
F2P = [f"{HIDDEN_TEST_PATH}::test_add_positive"]
P2P = [f"{HIDDEN_TEST_PATH}::test_add_zero", "tests/test_ops.py::test_sub"]

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def _diff_adding(repo: Path, path: str, content: str) -> str:
    """A git diff that adds `path` to the base state, made with git itself."""
    target = repo / path
    target.write_text(content)
    git(repo, "add", "-N", path)
    diff = git(repo, "diff", "--", path)
    git(repo, "reset", "-q", "--", path)
    target.unlink()
    return diff


def make_tiny_task(root: Path, instance_id: str = "tiny__calc-1") -> Task:
    repo = root / "calc-repo"
    (repo / "calc").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "calc" / "__init__.py").write_text("")
    (repo / "calc" / "ops.py").write_text(BUGGY_OPS)
    (repo / "tests" / "test_ops.py").write_text(VISIBLE_TEST)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "calc with a bug")
    base = git(repo, "rev-parse", "HEAD").strip()

    (repo / "calc" / "ops.py").write_text(FIXED_OPS)
    gold = git(repo, "diff")
    test_patch = _diff_adding(repo, HIDDEN_TEST_PATH, HIDDEN_TEST)
    # A later commit holding the fix and the hidden tests: must never reach the agent.
    (repo / HIDDEN_TEST_PATH).write_text(HIDDEN_TEST)
    git(repo, "checkout", "-q", "-b", "future-fix")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fix add (the answer)")
    git(repo, "checkout", "-q", "main")
    return Task(
        instance_id=instance_id,
        repo=str(repo),
        base_commit=base,
        problem_statement="calc.ops.add(2, 3) returns -1 instead of 5. Make add() add.",
        patch=gold,
        test_patch=test_patch,
        FAIL_TO_PASS=list(F2P),
        PASS_TO_PASS=list(P2P),
        test_files=[HIDDEN_TEST_PATH],
        exec_timeout_s=30.0,
        test_timeout_s=60.0,
        suite="tiny",
        difficulty="easy",
    )
