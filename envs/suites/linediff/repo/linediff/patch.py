"""Reading unified diffs and applying them to text."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Union

_HUNK_HEADER = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(ValueError):
    """A patch that cannot be parsed or applied; the message names the hunk."""


@dataclass
class Hunk:
    header: str
    old_start: int  # 0-based index in the old file where the hunk's old lines begin
    new_start: int
    body: list[tuple[str, str]] = field(default_factory=list)  # (' ' | '-' | '+', line)

    @property
    def old_lines(self) -> list[str]:
        return [line for op, line in self.body if op != "+"]

    @property
    def new_lines(self) -> list[str]:
        return [line for op, line in self.body if op != "-"]


@dataclass
class FilePatch:
    old_path: str
    new_path: str
    hunks: list[Hunk] = field(default_factory=list)


def _range_start(first: str, count: int) -> int:
    # GNU convention: an empty range names the line before the gap, so it already is the
    # 0-based index of the gap; a non-empty range names its own first line.
    return int(first) - 1 if count else int(first)


def _count(text: Optional[str]) -> int:
    # A count left out of the header ("@@ -3 +3 @@") means a single line.
    return int(text) if text is not None else 1


def _path(line: str) -> str:
    # "--- a/file.py\t2024-01-01 ..." → "a/file.py"; the timestamp after a tab is optional.
    return line[4:].rstrip("\n").split("\t", 1)[0]


def parse_patch(text: str) -> list[FilePatch]:
    """All file patches in `text`; lines outside hunks (e.g. 'diff --git') are ignored."""
    lines = text.splitlines(keepends=True)
    patches: list[FilePatch] = []
    hunk: Optional[Hunk] = None
    old_left = new_left = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        index += 1
        # "\ No newline at end of file" (its wording is localized, so only the backslash
        # counts): the previous body line has no line ending.
        if line.startswith("\\"):
            if hunk is None or not hunk.body:
                raise PatchError(f"line {number}: {line.strip()!r} does not follow a hunk line")
            op, previous = hunk.body[-1]
            hunk.body[-1] = (op, previous[:-1] if previous.endswith("\n") else previous)
            continue
        if old_left or new_left:
            op, content = line[:1], line[1:]
            if line == "\n":
                op, content = " ", "\n"  # some tools strip the space of an empty context line
            if op not in (" ", "-", "+"):
                raise PatchError(f"line {number}: hunk {hunk.header} ends early: {old_left} old and {new_left} new lines missing")
            if (op != "+" and old_left == 0) or (op != "-" and new_left == 0):
                raise PatchError(f"line {number}: hunk {hunk.header} has more lines than its header says")
            old_left -= op != "+"
            new_left -= op != "-"
            hunk.body.append((op, content))
            continue
        if line.startswith("--- ") and index < len(lines) and lines[index].startswith("+++ "):
            patches.append(FilePatch(_path(line), _path(lines[index])))
            index += 1
            hunk = None
            continue
        match = _HUNK_HEADER.match(line)
        if match:
            if not patches:
                raise PatchError(f"line {number}: hunk before any '---'/'+++' file header")
            old_count, new_count = _count(match[2]), _count(match[4])
            hunk = Hunk(
                header=line[: match.end()],
                old_start=_range_start(match[1], old_count),
                new_start=_range_start(match[3], new_count),
            )
            patches[-1].hunks.append(hunk)
            old_left, new_left = old_count, new_count
    if old_left or new_left:
        raise PatchError(f"hunk {hunk.header} is cut short: {old_left} old and {new_left} new lines missing")
    return patches


def reversed_patch(patch: FilePatch) -> FilePatch:
    """The patch that undoes `patch`."""
    swapped = {" ": " ", "-": "+", "+": "-"}
    return FilePatch(
        old_path=patch.new_path,
        new_path=patch.old_path,
        hunks=[
            Hunk(h.header, h.new_start, h.old_start, [(swapped[op], line) for op, line in h.body])
            for h in patch.hunks
        ],
    )


def _locate(lines: list[str], wanted: list[str], expected: int, earliest: int) -> Optional[int]:
    """Where `wanted` occurs in `lines` at or after `earliest`, nearest to `expected` first.

    Searching both ways mirrors patch(1): a hunk still applies after lines were added or
    removed above it.
    """
    latest = len(lines) - len(wanted)
    for distance in range(len(lines) + 1):
        for candidate in (expected - distance, expected + distance):
            if earliest <= candidate <= latest and lines[candidate : candidate + len(wanted)] == wanted:
                return candidate
    return None


def apply_patch(text: str, patch: Union[str, FilePatch], *, reverse: bool = False) -> str:
    """Apply a single-file unified diff to `text` (or undo it with reverse=True)."""
    if isinstance(patch, str):
        parsed = parse_patch(patch)
        if len(parsed) != 1:
            raise PatchError(f"expected a patch for exactly one file, found {len(parsed)}")
        patch = parsed[0]
    if reverse:
        patch = reversed_patch(patch)
    lines = text.splitlines(keepends=True)
    result: list[str] = []
    position = 0  # lines before this index are already copied or replaced
    drift = 0  # how far earlier hunks were from their stated place; later ones likely moved too
    for hunk in patch.hunks:
        old = hunk.old_lines
        found = _locate(lines, old, hunk.old_start + drift, position)
        if found is None:
            raise PatchError(f"hunk {hunk.header} does not apply: its old lines are not in the text")
        drift = found - hunk.old_start
        result.extend(lines[position:found])
        result.extend(hunk.new_lines)
        position = found + len(old)
    result.extend(lines[position:])
    return "".join(result)
