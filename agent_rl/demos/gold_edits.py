"""A gold patch → the env's own edit actions (str_replace, create, `rm`), pure.

The expert never writes the patch file or runs `git apply`: it makes the change the way a
policy must, one action at a time. Each modified file's hunks become str_replace edits,
applied top to bottom; every edit's search text starts from the hunk's changed lines and
grows by whole lines of surrounding context until it occurs exactly once in the file as it
is at that moment (the env refuses a search text that occurs 0 or 2+ times). New files
become `Create`, deleted files `rm`, renamed files a `Create` of the new path and an `rm`
of the old. Binary patches are refused (`GoldPatchError`): no text action can make them.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Mapping

from envs.actions import Action, Bash, Create, StrReplace
from envs.patch_screen import split_patch


class GoldPatchError(ValueError):
    """The gold patch cannot be turned into edit actions (binary, malformed, or does not match the base)."""


@dataclass(frozen=True)
class Hunk:
    old_start: int  # 1-based line in the base file where the hunk's old lines begin
    old: tuple[str, ...]  # context and removed lines, each with its newline (unless at EOF without one)
    new: tuple[str, ...]  # context and added lines


@dataclass
class FileDiff:
    old_path: str | None  # None: a new file
    new_path: str | None  # None: a deleted file
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The path the change is about: the new one, or the old one for a deletion."""
        return self.new_path or self.old_path or ""


_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _side_path(raw: str) -> str | None:
    path = raw.split("\t")[0].strip()
    if path.startswith('"') and path.endswith('"'):
        path = path[1:-1].encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
    if path == "/dev/null":
        return None
    return path[2:] if path.startswith(("a/", "b/")) else path


def parse_patch(patch: str) -> list[FileDiff]:
    """The per-file diffs of a unified (git or plain) diff, hunks with their exact line text."""
    diffs = []
    for section in split_patch(patch):
        lines = section.text.splitlines(keepends=True)
        diff = FileDiff(old_path=None, new_path=None)
        renamed: dict[str, str] = {}
        i = 0
        while i < len(lines) and not lines[i].startswith("@@"):
            text = lines[i].rstrip("\n")
            if text.startswith("GIT binary patch") or text.startswith("Binary files "):
                raise GoldPatchError(f"binary change to {section.paths}: no text action can make it")
            if text.startswith("--- "):
                diff.old_path = _side_path(text[4:])
            elif text.startswith("+++ "):
                diff.new_path = _side_path(text[4:])
            elif text.startswith(("rename from ", "rename to ")):
                renamed[text.split(" ")[1]] = text.split(" ", 2)[2]
            i += 1
        if diff.old_path is None and diff.new_path is None:  # no ---/+++ lines: git says what in its header
            header = section.text.split("@@", 1)[0]
            if renamed:
                diff.old_path, diff.new_path = renamed.get("from"), renamed.get("to")
            elif "\nnew file mode " in header and section.paths:
                diff.new_path = section.paths[0]  # an empty new file
            elif "\ndeleted file mode " in header and section.paths:
                diff.old_path = section.paths[0]  # an empty file deleted
            else:
                continue  # a mode change only
        diff.hunks = _parse_hunks(lines[i:], diff.path)
        diffs.append(diff)
    return diffs


def _parse_hunks(lines: list[str], path: str) -> list[Hunk]:
    hunks = []
    i = 0
    while i < len(lines):
        header = _HUNK_HEADER.match(lines[i])
        if not header:
            i += 1
            continue
        old_count = int(header.group(2) or 1)
        new_count = int(header.group(4) or 1)
        old: list[str] = []
        new: list[str] = []
        last: list[list[str]] = []  # the side(s) of the previous line, for "\ No newline"
        i += 1
        while i < len(lines) and (len(old) < old_count or len(new) < new_count or lines[i].startswith("\\")):
            line = lines[i]
            # Some tools strip the space of an empty context line.
            tag, body = (" ", "\n") if line == "\n" else (line[:1], line[1:])
            if not body.endswith("\n"):
                body += "\n"  # a diff's last line may lack its newline; "\ No newline" says when the file does
            if tag == "\\":
                for side in last:
                    side[-1] = side[-1][:-1]
            elif tag == " ":
                old.append(body)
                new.append(body)
                last = [old, new]
            elif tag == "-":
                old.append(body)
                last = [old]
            elif tag == "+":
                new.append(body)
                last = [new]
            else:
                raise GoldPatchError(f"{path}: unexpected line in a hunk: {line!r}")
            i += 1
        if len(old) != old_count or len(new) != new_count:
            raise GoldPatchError(f"{path}: hunk at line {header.group(1)} is truncated")
        # "@@ -0,0": an empty old side starts after line 0; otherwise old_start is its first line.
        start = int(header.group(1)) if old_count else int(header.group(1)) + 1
        hunks.append(Hunk(old_start=start, old=tuple(old), new=tuple(new)))
    return hunks


def apply_hunks(content: str, hunks: list[Hunk], path: str = "the file") -> str:
    """The file after the hunks; GoldPatchError when a hunk's old lines are not where it says."""
    lines = content.splitlines(keepends=True)
    delta = 0
    for hunk in hunks:
        at = hunk.old_start - 1 + delta
        if tuple(lines[at : at + len(hunk.old)]) != hunk.old:
            raise GoldPatchError(f"{path}: the hunk at line {hunk.old_start} does not match the base file")
        lines[at : at + len(hunk.old)] = hunk.new
        delta += len(hunk.new) - len(hunk.old)
    return "".join(lines)


def str_replace_edits(content: str, hunks: list[Hunk], path: str = "the file") -> list[tuple[str, str]] | None:
    """(old, new) pairs that, applied in order with exactly-once matching, turn `content` into
    `apply_hunks(content, hunks)`; None when some change cannot be made unique (then the
    caller rewrites the whole file)."""
    lines = content.splitlines(keepends=True)
    edits = []
    delta = 0
    for hunk in hunks:
        at = hunk.old_start - 1 + delta
        if tuple(lines[at : at + len(hunk.old)]) != hunk.old:
            raise GoldPatchError(f"{path}: the hunk at line {hunk.old_start} does not match the base file")
        # Trim the hunk's shared context: the edit starts from the lines that really change.
        head = 0
        while head < min(len(hunk.old), len(hunk.new)) and hunk.old[head] == hunk.new[head]:
            head += 1
        tail = 0
        while tail < min(len(hunk.old), len(hunk.new)) - head and hunk.old[-1 - tail] == hunk.new[-1 - tail]:
            tail += 1
        lo, hi = at + head, at + len(hunk.old) - tail
        core_new = list(hunk.new[head : len(hunk.new) - tail])
        window = _unique_window(lines, lo, hi)
        if window is None:
            return None
        wlo, whi = window
        old = "".join(lines[wlo:whi])
        new = "".join(lines[wlo:lo] + core_new + lines[hi:whi])
        edits.append((old, new))
        lines[lo:hi] = core_new
        delta += len(hunk.new) - len(hunk.old)
    return edits


def _unique_window(lines: list[str], lo: int, hi: int) -> tuple[int, int] | None:
    """Grow [lo, hi) by whole lines, below then above in turn, until its text occurs once."""
    text = "".join(lines)
    grow_below = True
    while hi == lo or text.count("".join(lines[lo:hi])) != 1:
        if hi >= len(lines) and lo <= 0:
            return None
        if (grow_below and hi < len(lines)) or lo <= 0:
            hi += 1
        else:
            lo -= 1
        grow_below = not grow_below
    return lo, hi


def edit_actions(diff: FileDiff, base: Mapping[str, str]) -> list[Action]:
    """The actions that make `diff`'s change; `base` maps paths to their base-commit text."""
    if diff.old_path is None:
        assert diff.new_path is not None
        return [Create(diff.new_path, apply_hunks("", diff.hunks, diff.new_path))]
    rm = Bash(f"rm {shlex.quote(diff.old_path)}")
    if diff.new_path is None:
        return [rm]
    if diff.old_path not in base:
        raise GoldPatchError(f"{diff.old_path}: no base content to edit")
    content = base[diff.old_path]
    if diff.new_path != diff.old_path:
        return [Create(diff.new_path, apply_hunks(content, diff.hunks, diff.old_path)), rm]
    edits = str_replace_edits(content, diff.hunks, diff.old_path)
    if edits is None:
        return [Create(diff.old_path, apply_hunks(content, diff.hunks, diff.old_path))]
    return [StrReplace(diff.old_path, old, new) for old, new in edits]


def gold_actions(patch: str, base: Mapping[str, str]) -> list[Action]:
    """Every file's edit actions, in the patch's file order."""
    diffs = parse_patch(patch)
    if not diffs:
        raise GoldPatchError("the gold patch changes no file")
    return [action for diff in diffs for action in edit_actions(diff, base)]
