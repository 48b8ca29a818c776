"""Unified diff output, as produced by `diff -u` and `git diff`."""
from __future__ import annotations

from typing import Iterable, Sequence

from .opcodes import Opcode, opcodes

NO_NEWLINE_MARKER = "\\ No newline at end of file"


def format_range(start: int, length: int) -> str:
    """A hunk header range from a 0-based start and a line count, in GNU diff's conventions:
    a count of 1 is left out, and an empty range names the line *before* the gap (so an
    insertion at the top of a file is '0,0')."""
    first = start + 1
    if length == 1:
        return f"{first}"
    if length == 0:
        first -= 1
    return f"{first},{length}"


def group_hunks(codes: Sequence[Opcode], context: int) -> list[list[Opcode]]:
    """Split opcodes into hunks with at most `context` unchanged lines around each change."""
    if all(code.tag == "equal" for code in codes):
        return []
    codes = list(codes)
    first, last = codes[0], codes[-1]
    if first.tag == "equal":
        codes[0] = Opcode("equal", max(first.i1, first.i2 - context), first.i2, max(first.j1, first.j2 - context), first.j2)
    if last.tag == "equal":
        codes[-1] = Opcode("equal", last.i1, min(last.i2, last.i1 + context), last.j1, min(last.j2, last.j1 + context))
    hunks: list[list[Opcode]] = []
    current: list[Opcode] = []
    for code in codes:
        # An unchanged run longer than the context after one change plus the context before
        # the next one separates two hunks; a shorter run keeps them in one hunk.
        if code.tag == "equal" and code.i2 - code.i1 > 2 * context and current:
            current.append(Opcode("equal", code.i1, code.i1 + context, code.j1, code.j1 + context))
            hunks.append(current)
            current = [Opcode("equal", code.i2 - context, code.i2, code.j2 - context, code.j2)]
        else:
            current.append(code)
    hunks.append(current)
    return hunks


def _body_line(prefix: str, line: str) -> str:
    if line.endswith("\n"):
        return prefix + line
    # The last line of a file without a final newline: say so, as diff(1) does, so that
    # applying the patch reproduces the file byte for byte.
    return prefix + line + "\n" + NO_NEWLINE_MARKER + "\n"


def _hunk_text(hunk: list[Opcode], a: Sequence[str], b: Sequence[str]) -> Iterable[str]:
    first, last = hunk[0], hunk[-1]
    old = format_range(first.i1, last.i2 - first.i1)
    new = format_range(first.j1, last.j2 - first.j1)
    yield f"@@ -{old} +{new} @@\n"
    for code in hunk:
        if code.tag == "equal":
            for line in a[code.i1 : code.i2]:
                yield _body_line(" ", line)
            continue
        for line in a[code.i1 : code.i2]:
            yield _body_line("-", line)
        for line in b[code.j1 : code.j2]:
            yield _body_line("+", line)


def unified_diff(
    a: Sequence[str], b: Sequence[str], fromfile: str = "a", tofile: str = "b", context: int = 3
) -> str:
    """The unified diff of two lists of lines (with their line endings); '' when equal."""
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    hunks = group_hunks(opcodes(a, b), context)
    if not hunks:
        return ""
    parts = [f"--- {fromfile}\n", f"+++ {tofile}\n"]
    for hunk in hunks:
        parts.extend(_hunk_text(hunk, a, b))
    return "".join(parts)


def diff_texts(old: str, new: str, fromfile: str = "a", tofile: str = "b", context: int = 3) -> str:
    """unified_diff of two whole texts."""
    return unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile, tofile, context)
