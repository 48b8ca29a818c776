"""Parse and validate one built-in suite directory: `repo/`, `tasks.yaml` and `lists.json`.

Nothing here touches git or runs tests; it only turns files into checked dataclasses.
Every error names the file, the task and the field, because a suite author fixing a typo
in a 1,000-line YAML file needs to be pointed at the exact spot.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import yaml
from pydantic import Field

from envs.tasks import TaskError
from strictconfig import ConfigError, StrictModel

DIFFICULTIES = ("easy", "medium", "hard")

# Bumped when the materialized layout or commit recipe changes, so stale caches are ignored.
FORMAT_VERSION = 1

# Files that appear when someone runs the library's tests in place; never part of the library.
_IGNORED_DIRS = {"__pycache__", ".pytest_cache", ".git", ".mypy_cache", ".ruff_cache"}
_IGNORED_SUFFIXES = (".pyc", ".pyo")

_HIDDEN_TEST_PATH = re.compile(r"tests/test_[A-Za-z0-9_]+\.py")


class SuiteError(TaskError):
    """A malformed or inconsistent suite; the message names the file, task and field."""


@dataclass(frozen=True)
class BugEdit:
    """One text replacement that turns the clean library into the buggy base state."""

    file: str
    old: str
    new: str


@dataclass(frozen=True)
class HiddenTest:
    """A test file added by the task's test_patch; it never exists in the agent's repo."""

    file: str
    content: str


@dataclass(frozen=True)
class TaskSpec:
    id: str
    difficulty: str
    problem_statement: str
    bug: tuple[BugEdit, ...]
    hidden_tests: tuple[HiddenTest, ...]


@dataclass(frozen=True)
class TaskTestLists:
    fingerprint: str
    FAIL_TO_PASS: list[str] = field(default_factory=list)
    PASS_TO_PASS: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    root: Path
    tasks: tuple[TaskSpec, ...]

    @property
    def repo_dir(self) -> Path:
        return self.root / "repo"

    @property
    def tasks_file(self) -> Path:
        return self.root / "tasks.yaml"

    @property
    def lists_file(self) -> Path:
        return self.root / "lists.json"


# --- raw shapes: strict models, so unknown keys are rejected; values are checked below ---


class _RawSuiteFile(StrictModel):
    """tasks.yaml's top level."""

    suite: Any = None
    tasks: Any = None


class _RawTask(StrictModel):
    """One entry of tasks.yaml's `tasks`."""

    id: Any = None
    difficulty: Any = None
    problem_statement: Any = None
    bug: Any = None
    hidden_tests: Any = None


class _RawBugEdit(StrictModel):
    """One entry of a task's `bug`."""

    file: Any = None
    old: Any = None
    new: Any = None


class _RawHiddenTest(StrictModel):
    """One entry of a task's `hidden_tests`."""

    file: Any = None
    content: Any = None


class _RawTestLists(StrictModel):
    """One task's entry in lists.json."""

    fingerprint: str
    FAIL_TO_PASS: Any = Field(default_factory=list)
    PASS_TO_PASS: Any = Field(default_factory=list)


def _strict(cls: type[StrictModel], data: Any, where: str) -> Any:
    try:
        return cls.from_config(data, where)
    except ConfigError as exc:
        raise SuiteError(str(exc)) from None


def _require_str(value: Any, where: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise SuiteError(f"{where}: must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise SuiteError(f"{where}: must not be empty")
    return value


def _require_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise SuiteError(f"{where}: must be a non-empty list")
    return value


def _relative_path(value: Any, where: str) -> str:
    path = _require_str(value, where)
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path or str(pure) != path:
        raise SuiteError(f"{where}: {path!r} must be a normalized path relative to the repo root")
    return path


def _parse_task(raw: Any, suite: str, index: int, file: Path) -> TaskSpec:
    label = raw.get("id") if isinstance(raw, Mapping) and isinstance(raw.get("id"), str) else f"#{index}"
    where = f"{file}: task {label!r}"
    task = _strict(_RawTask, raw, where)
    task_id = _require_str(task.id, f"{where}: field id")
    if not re.fullmatch(rf"{re.escape(suite)}-\d{{3}}", task_id):
        raise SuiteError(f"{where}: field id must look like '{suite}-001'")
    if task.difficulty not in DIFFICULTIES:
        raise SuiteError(f"{where}: field difficulty must be one of {', '.join(DIFFICULTIES)}, got {task.difficulty!r}")
    statement = _require_str(task.problem_statement, f"{where}: field problem_statement")

    edits = []
    for i, raw_edit in enumerate(_require_list(task.bug, f"{where}: field bug")):
        at = f"{where}: field bug[{i}]"
        edit = _strict(_RawBugEdit, raw_edit, at)
        edits.append(
            BugEdit(
                file=_relative_path(edit.file, f"{at}.file"),
                old=_require_str(edit.old, f"{at}.old"),
                new=_require_str(edit.new, f"{at}.new", allow_empty=True),
            )
        )
        if edits[-1].old == edits[-1].new:
            raise SuiteError(f"{at}: old and new are identical, so the edit injects no bug")

    hidden = []
    for i, raw_test in enumerate(_require_list(task.hidden_tests, f"{where}: field hidden_tests")):
        at = f"{where}: field hidden_tests[{i}]"
        test = _strict(_RawHiddenTest, raw_test, at)
        path = _relative_path(test.file, f"{at}.file")
        if not _HIDDEN_TEST_PATH.fullmatch(path):
            raise SuiteError(f"{at}.file: {path!r} must be a new file named tests/test_<name>.py")
        hidden.append(HiddenTest(file=path, content=_require_str(test.content, f"{at}.content")))
    if len({h.file for h in hidden}) != len(hidden):
        raise SuiteError(f"{where}: field hidden_tests lists the same file twice")
    return TaskSpec(task_id, task.difficulty, statement, tuple(edits), tuple(hidden))


def parse_suite(root: Path) -> SuiteSpec:
    """Read `root/tasks.yaml` and check its shape (not yet whether the edits apply)."""
    name = root.name
    file = root / "tasks.yaml"
    if not (root / "repo").is_dir():
        raise SuiteError(f"{root}: suite {name!r} has no repo/ directory")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SuiteError(f"{file}: missing (suite {name!r} needs a tasks.yaml)") from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"{file}: not valid YAML: {exc}") from None
    top = _strict(_RawSuiteFile, data, str(file))
    if top.suite != name:
        raise SuiteError(f"{file}: field suite is {top.suite!r} but the directory is {name!r}")
    tasks = [_parse_task(raw, name, i, file) for i, raw in enumerate(_require_list(top.tasks, f"{file}: field tasks"))]
    seen: set[str] = set()
    for task in tasks:
        if task.id in seen:
            raise SuiteError(f"{file}: task {task.id!r}: field id is used twice")
        seen.add(task.id)
    clean = set(read_tree(root / "repo"))
    for task in tasks:
        for i, test in enumerate(task.hidden_tests):
            if test.file in clean:
                raise SuiteError(
                    f"{file}: task {task.id!r}: field hidden_tests[{i}].file: {test.file} already exists in repo/"
                )
    return SuiteSpec(name, root, tuple(tasks))


def read_tree(repo_dir: Path) -> dict[str, str]:
    """The library's files as {posix relative path: text}, skipping caches left by local runs."""
    tree: dict[str, str] = {}
    for path in sorted(repo_dir.rglob("*")):
        rel = path.relative_to(repo_dir)
        if any(part in _IGNORED_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and not path.name.endswith(_IGNORED_SUFFIXES):
            tree[rel.as_posix()] = path.read_text(encoding="utf-8")
    return tree


def apply_bug(tree: Mapping[str, str], task: TaskSpec, file: Path) -> dict[str, str]:
    """The buggy tree: each `old` text must occur exactly once in the file it edits."""
    buggy = dict(tree)
    for i, edit in enumerate(task.bug):
        where = f"{file}: task {task.id!r}: field bug[{i}]"
        if edit.file not in buggy:
            raise SuiteError(f"{where}.file: {edit.file} does not exist in repo/")
        count = buggy[edit.file].count(edit.old)
        if count != 1:
            hint = ""
            if count == 0 and "\n" in edit.old.rstrip("\n"):
                # A YAML `|` block strips the common indentation, which a multi-line match needs.
                hint = " (a multi-line `old` must keep the file's indentation: write it double-quoted, see envs/suites/README.md)"
            raise SuiteError(f"{where}.old: found {count} times in {edit.file}, must be exactly once{hint}")
        buggy[edit.file] = buggy[edit.file].replace(edit.old, edit.new)
    return buggy


def fingerprint(clean_tree: Mapping[str, str], task: TaskSpec) -> str:
    """Hash of everything that decides the task's repo, patches and test outcomes.

    The problem statement is left out on purpose: rewording an issue needs no re-run.
    """
    payload = {
        "format": FORMAT_VERSION,
        "id": task.id,
        "clean": dict(sorted(clean_tree.items())),
        "bug": [[e.file, e.old, e.new] for e in task.bug],
        "hidden": [[h.file, h.content] for h in task.hidden_tests],
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:20]


def read_lists(suite: SuiteSpec) -> dict[str, TaskTestLists]:
    """lists.json as {task id: TaskTestLists}; an absent file is an empty mapping."""
    file = suite.lists_file
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{file}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{file}: expected an object keyed by task id")
    lists = {}
    for task_id, entry in data.items():
        raw = _strict(_RawTestLists, entry, f"{file}: task {task_id!r}")
        lists[task_id] = TaskTestLists(raw.fingerprint, raw.FAIL_TO_PASS, raw.PASS_TO_PASS)
        for name in ("FAIL_TO_PASS", "PASS_TO_PASS"):
            value = getattr(lists[task_id], name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SuiteError(f"{file}: task {task_id!r}: field {name} must be a list of test ids")
    return lists


def write_lists(suite: SuiteSpec, lists: Mapping[str, TaskTestLists]) -> None:
    data = {
        task_id: {
            "fingerprint": entry.fingerprint,
            "FAIL_TO_PASS": sorted(entry.FAIL_TO_PASS),
            "PASS_TO_PASS": sorted(entry.PASS_TO_PASS),
        }
        for task_id, entry in lists.items()
    }
    suite.lists_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
