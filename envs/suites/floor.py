"""The floor tier: a variant of a bug task whose statement points at the fix.

A 135M model almost never solves an issue-style task, so RL on those gets no reward signal.
A floor variant keeps everything that is graded (repo, base commit, gold patch, hidden tests,
FAIL_TO_PASS / PASS_TO_PASS, image) and only rewrites the problem statement: it names the
file, the enclosing function, the line number, the exact wrong text and the text that should
replace it. What is left to learn is the agent's side of the work: open the file, issue one
search/replace edit with the right text, submit.

The locations come from the gold patch read against the buggy file, so one derivation serves
the built-in suites (whose gold patch is the reverse of tasks.yaml's bug edits) and synthesized
tasks (the reverse of the recorded mutation) alike, and any other task that has a gold patch
touching existing files. The wrong text is widened to whole lines, and further until it occurs
exactly once in the buggy file, because a search/replace edit needs a unique match.
"""
from __future__ import annotations

import ast
import re
import subprocess
from dataclasses import dataclass, replace
from typing import Callable

from envs.tasks import Task, TaskError, resolve_repo

FLOOR = "floor"
SUFFIX = "-floor"

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class Fix:
    """One place to edit: `wrong` occurs exactly once in the buggy `path`; `right` replaces it."""

    path: str
    line: int  # 1-based line of the buggy file where `wrong` starts
    function: str  # enclosing def/class chain, e.g. "Version.precedence_key"; "" at module level
    wrong: str
    right: str


@dataclass(frozen=True)
class _Block:
    """A run of removed/added lines of one hunk; `start` is its 0-based line in the buggy file."""

    path: str
    start: int
    removed: list[str]
    added: list[str]


def _diff_path(line: str) -> str:
    path = line.split(" ", 1)[1].strip()
    return path[2:] if path.startswith(("a/", "b/")) else path


def _lines(text: str) -> list[str]:
    """Lines with their "\n", split on "\n" only (str.splitlines also splits on \f, \x1c, …)."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def parse_blocks(patch: str) -> list[_Block]:
    """The change blocks of a unified diff that only modifies existing text files."""
    blocks: list[_Block] = []
    path = ""
    buggy_line = old_left = new_left = 0  # position in the buggy file; lines the current hunk still holds
    current: _Block | None = None
    for line in _lines(patch):
        if old_left or new_left:  # inside a hunk every line is content, even one reading "--- x"
            if line.startswith("\\"):
                continue  # "\ No newline at end of file"
            kind, text = line[:1], line[1:]
            if kind == " " or line == "\n":
                buggy_line, old_left, new_left, current = buggy_line + 1, old_left - 1, new_left - 1, None
                continue
            if current is None:
                current = _Block(path, buggy_line, [], [])
                blocks.append(current)
            if kind == "-":
                current.removed.append(text)
                buggy_line, old_left = buggy_line + 1, old_left - 1
            else:
                current.added.append(text)
                new_left -= 1
        elif line.startswith("--- "):
            if _diff_path(line) == "/dev/null":
                raise TaskError("the gold patch creates a file; a floor statement needs an edit to an existing one")
            path = _diff_path(line)
        elif line.startswith("+++ "):
            if _diff_path(line) == "/dev/null":
                raise TaskError(f"the gold patch deletes {path}; a floor statement needs an edit, not a deletion")
        elif line.startswith("GIT binary patch"):
            raise TaskError("the gold patch is binary; a floor statement needs a text edit")
        elif (match := _HUNK.match(line)) is not None and path:
            old_left = int(match.group(2) or 1)
            new_left = int(match.group(4) or 1)
            # An empty old range names the line *after* which the new lines go.
            buggy_line = int(match.group(1)) - (1 if old_left else 0)
            current = None
    if not blocks:
        raise TaskError("the gold patch changes no lines")
    return blocks


def enclosing_function(source: str, line: int) -> str:
    """The qualified name of the innermost def/class holding 1-based `line` ("" at module level)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    names: list[str] = []
    node: ast.AST = tree
    while True:
        inner = next(
            (c for c in ast.iter_child_nodes(node)
             if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
             and c.lineno <= line <= (c.end_lineno or c.lineno)),
            None,
        )
        if inner is None:
            return ".".join(names)
        names.append(inner.name)
        node = inner


def _widen(lines: list[str], block: _Block) -> tuple[int, int]:
    """Whole-line span [a, b) of the buggy file covering the block, unique as a substring."""
    text = "".join(lines)
    a, b = block.start, block.start + len(block.removed)
    if a == b:  # pure insertion: anchor on the line before (or after, at the top of the file)
        a, b = (a - 1, b) if a > 0 else (a, b + 1)
    while a > 0 or b < len(lines):
        snippet = "".join(lines[a:b])
        if snippet.strip() and text.count(snippet) == 1:
            break
        # Grow upwards first: the line above usually names the statement the text belongs to.
        a, b = (a - 1, b) if a > 0 else (a, b + 1)
    return a, b


def locate_fixes(patch: str, read_buggy: Callable[[str], str]) -> list[Fix]:
    """Each change of the gold `patch` as a unique wrong → right replacement in the buggy file."""
    fixes: list[Fix] = []
    for block in parse_blocks(patch):
        source = read_buggy(block.path)
        lines = _lines(source)
        if lines[block.start: block.start + len(block.removed)] != block.removed:
            raise TaskError(f"the gold patch does not match {block.path} at line {block.start + 1}")
        a, b = _widen(lines, block)
        before = lines[a: block.start]
        after = lines[block.start + len(block.removed): b]
        wrong = "".join(lines[a:b])
        right = "".join(before + block.added + after)
        changed = block.start + 1 if block.removed else a + 1
        fixes.append(Fix(block.path, a + 1, enclosing_function(source, changed), wrong, right))
    return fixes


def _fence(text: str) -> str:
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}python\n{text.rstrip(chr(10))}\n{ticks}"


def floor_statement(fixes: list[Fix], title: str = "") -> str:
    """The floor problem statement: where the bug is, the exact wrong text, the exact right text."""
    parts = []
    if title:
        parts += [f"Bug: {title}", ""]
    many = len(fixes) > 1
    parts.append(f"The bug is in {len(fixes)} places; fix each one." if many else "The bug is in one place.")
    for i, fix in enumerate(fixes, start=1):
        where = f"`{fix.path}`" + (f", function `{fix.function}`" if fix.function else "") + f", line {fix.line}"
        parts += [
            "",
            (f"{i}. " if many else "") + f"In {where}, this text is wrong:",
            "",
            _fence(fix.wrong),
            "",
            "It should be:",
            "",
            _fence(fix.right),
        ]
    parts += [
        "",
        "Replace the wrong text with the corrected text exactly as shown (one search/replace edit "
        "per place, keeping the indentation), then submit.",
    ]
    return "\n".join(parts) + "\n"


def _git_reader(task: Task) -> Callable[[str], str]:
    repo = resolve_repo(task)

    def read(path: str) -> str:
        proc = subprocess.run(
            ["git", "show", f"{task.base_commit}:{path}"], cwd=repo, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise TaskError(f"task {task.instance_id!r}: {path} is not in the repo at {task.base_commit}")
        return proc.stdout

    return read


def _title(statement: str) -> str:
    first = next((line.strip().lstrip("#").strip() for line in statement.splitlines() if line.strip()), "")
    return first[:160]


def floor_variant(task: Task, read_buggy: Callable[[str], str] | None = None) -> Task:
    """The task with a floor statement, difficulty `floor` and id `<id>-floor`; all else unchanged.

    `read_buggy(path)` returns a file of the buggy repo; by default it is read from
    `task.repo` at `task.base_commit`. Raises TaskError when the task has no usable gold patch.
    """
    if not task.patch.strip():
        raise TaskError(f"task {task.instance_id!r}: no gold patch, so no floor variant")
    try:
        fixes = locate_fixes(task.patch, read_buggy or _git_reader(task))
    except TaskError as exc:
        raise TaskError(f"task {task.instance_id!r}: {exc}") from None
    extra = dict(task.extra)
    extra["floor"] = {
        "source_id": task.instance_id,
        "source_difficulty": task.difficulty,
        "fixes": [{"path": f.path, "line": f.line, "function": f.function} for f in fixes],
    }
    return replace(
        task,
        instance_id=task.instance_id + SUFFIX,
        problem_statement=floor_statement(fixes, _title(task.problem_statement)),
        difficulty=FLOOR,
        extra=extra,
    )
