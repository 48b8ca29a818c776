"""Patch screening, steps 1 and 2 of grading (pure functions, no container).

1. **Filter**: drop the agent's changes to anything that decides how tests run or what they
   check (hidden test files, test trees and files, conftest.py, pytest configuration, start-up
   hooks, modules shadowing the framework, symlinks).
2. **Scan**: added lines elsewhere that reach into the test machinery are tamper findings.

See `envs.grading` for the whole defence and what happens after screening.
"""
from __future__ import annotations

import codecs
import fnmatch
import posixpath
import re
from dataclasses import dataclass
from typing import Iterable

from envs.tasks import Task


# --------------------------------------------------------------------------------------
# 1. Patch filtering (pure)
# --------------------------------------------------------------------------------------

_CONFIG_FILES = {"pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml", "conftest.py"}
_STARTUP_HOOKS = {"sitecustomize.py", "usercustomize.py"}
_FRAMEWORK_SHADOWS = {"pytest.py", "_pytest", "pytest", "pluggy", "pluggy.py", "py.py"}
_TEST_DIRS = {"tests", "test", "testing"}
_TEST_FILE_GLOBS = ("test_*.py", "*_test.py")


@dataclass(frozen=True)
class FilePatch:
    """One file's section of a unified diff."""

    paths: tuple[str, ...]  # every path the section names (old, new, rename/copy source and target)
    text: str
    is_symlink: bool = False


def _unquote_git_path(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith('"') and raw.endswith('"'):
        # git C-quotes unusual names; octal escapes are UTF-8 bytes.
        escaped = codecs.escape_decode(raw[1:-1].encode("utf-8"))[0]
        raw = escaped.decode("utf-8", errors="replace")
    return raw


def _strip_prefix(path: str) -> str | None:
    path = _unquote_git_path(path.split("\t")[0])
    if path == "/dev/null":
        return None
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return posixpath.normpath(path)


def split_patch(patch: str) -> list[FilePatch]:
    """Split a (git or plain) unified diff into per-file sections."""
    lines = patch.splitlines(keepends=True)
    git_style = any(line.startswith("diff --git ") for line in lines)
    sections: list[list[str]] = []
    for index, line in enumerate(lines):
        starts = (
            line.startswith("diff --git ")
            if git_style
            else line.startswith("--- ") and index + 1 < len(lines) and lines[index + 1].startswith("+++ ")
        )
        if starts or not sections:
            sections.append([])
        sections[-1].append(line)
    return [_file_patch(section) for section in sections if any(l.strip() for l in section)]


_PATH_HEADERS = ("--- ", "+++ ", "rename from ", "rename to ", "copy from ", "copy to ")


def _file_patch(section: list[str]) -> FilePatch:
    paths: list[str] = []
    symlink = False
    for line in section:
        if line.startswith(("@@", "GIT binary patch")):
            break
        text = line.rstrip("\n")
        for header in _PATH_HEADERS:
            if text.startswith(header):
                path = _strip_prefix(text[len(header):]) if header in ("--- ", "+++ ") else posixpath.normpath(
                    _unquote_git_path(text[len(header):])
                )
                if path:
                    paths.append(path)
        if text.startswith("diff --git "):
            paths.extend(_paths_from_git_header(text[len("diff --git "):]))
        if re.match(r"(new file mode|new mode|old mode|deleted file mode|index [0-9a-f.]+) 120000", text):
            symlink = True
    return FilePatch(tuple(dict.fromkeys(paths)), "".join(section), symlink)


def _paths_from_git_header(rest: str) -> list[str]:
    if rest.startswith('"'):
        return []  # quoted names also appear in the ---/+++ or rename lines
    # "a/X b/X": for an unrenamed file both halves are equal, which survives spaces in X.
    half = (len(rest) - 1) // 2
    left, right = rest[:half], rest[half + 1:]
    if left.startswith("a/") and right.startswith("b/") and left[2:] == right[2:]:
        return [posixpath.normpath(left[2:])]
    parts = rest.split(" ")
    return [posixpath.normpath(p[2:]) for p in parts if p.startswith(("a/", "b/"))]


def patch_paths(patch: str) -> list[str]:
    """Every path a patch names (old, new, rename and copy sides), first appearance first."""
    return list(dict.fromkeys(p for section in split_patch(patch) for p in section.paths))


def protection_reason(path: str, hidden_test_files: Iterable[str] = ()) -> str | None:
    """Why the agent may not change `path`, or None if it may."""
    norm = posixpath.normpath(path)
    parts = norm.split("/")
    name = parts[-1]
    if norm in set(hidden_test_files):
        return "hidden test file"
    if norm.startswith("../") or norm.startswith("/") or ".git" in parts:
        return "outside the repository"
    if any(part in _TEST_DIRS for part in parts[:-1]):
        return "under a test directory"
    if any(fnmatch.fnmatch(name, glob) for glob in _TEST_FILE_GLOBS):
        return "test file"
    if name in _CONFIG_FILES:
        return "test configuration"
    if name in _STARTUP_HOOKS or name.endswith(".pth"):
        return "interpreter start-up hook"
    if any(part in _FRAMEWORK_SHADOWS for part in parts):
        return "shadows the test framework"
    return None


def hidden_test_files(task: Task) -> list[str]:
    """The task's hidden test files: those it lists and those its test patch touches."""
    return list(dict.fromkeys([*task.test_files, *patch_paths(task.test_patch)]))


def filter_patch(patch: str, protected: Iterable[str] = ()) -> tuple[str, list[str]]:
    """(patch without protected sections, sorted list of dropped paths)."""
    protected = list(protected)
    kept: list[str] = []
    dropped: set[str] = set()
    for section in split_patch(patch):
        bad = [p for p in section.paths if protection_reason(p, protected)]
        if bad or section.is_symlink:
            dropped.update(section.paths)
        else:
            kept.append(section.text)
    return "".join(kept), sorted(dropped)


# --------------------------------------------------------------------------------------
# 2. Static scan (pure)
# --------------------------------------------------------------------------------------

TAMPER_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"_pytest|\bpytest\b|\bpluggy\b", "references the test framework"),
    (r"TestReport|junit|PYTEST_", "references test reporting"),
    (
        r"sys\._getframe|\bf_back\b|__code__|gc\.get_referrers|gc\.get_objects|inspect\.(?:stack|currentframe|getouterframes)",
        "frame/code-object hacking",
    ),
    (r"\bos\._exit\b", "hard process exit"),
    (r"sitecustomize|usercustomize|conftest", "references interpreter or test start-up hooks"),
)


def scan_patch(patch: str) -> list[str]:
    """Findings for added lines that reach into the test machinery: '<path>: <why>'."""
    findings: list[str] = []
    for section in split_patch(patch):
        path = section.paths[-1] if section.paths else "?"
        added = [l[1:] for l in section.text.splitlines() if l.startswith("+") and not l.startswith("+++ ")]
        body = "\n".join(added)
        for pattern, why in TAMPER_PATTERNS:
            match = re.search(pattern, body)
            if match:
                findings.append(f"{path}: {why} ({match.group(0)!r})")
    return findings
