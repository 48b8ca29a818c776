"""diffstat: how many lines each file patch adds and removes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .patch import parse_patch


@dataclass(frozen=True)
class FileStat:
    path: str
    insertions: int
    deletions: int


def _display_path(old_path: str, new_path: str) -> str:
    # A deleted file's new path is /dev/null; show the path that still means something,
    # without git's a/ and b/ prefixes.
    path = old_path if new_path == "/dev/null" else new_path
    return path[2:] if path.startswith(("a/", "b/")) else path


def diffstat(patch_text: str) -> list[FileStat]:
    stats = []
    for patch in parse_patch(patch_text):
        ops = [op for hunk in patch.hunks for op, _ in hunk.body]
        stats.append(FileStat(_display_path(patch.old_path, patch.new_path), ops.count("+"), ops.count("-")))
    return stats


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def format_diffstat(stats: Sequence[FileStat], width: int = 40) -> str:
    """git-style: one ' path | N ++--' line per file and a summary line.

    Bars longer than `width` are scaled down, keeping at least one mark for a non-zero count.
    """
    if not stats:
        return " 0 files changed\n"
    name_width = max(len(s.path) for s in stats)
    count_width = max(len(str(s.insertions + s.deletions)) for s in stats)
    largest = max(s.insertions + s.deletions for s in stats)
    scale = min(1.0, width / largest) if largest else 1.0
    lines = []
    for s in stats:
        plus = max(1, round(s.insertions * scale)) if s.insertions else 0
        minus = max(1, round(s.deletions * scale)) if s.deletions else 0
        total = s.insertions + s.deletions
        lines.append(f" {s.path.ljust(name_width)} | {str(total).rjust(count_width)} {'+' * plus}{'-' * minus}")
    insertions = sum(s.insertions for s in stats)
    deletions = sum(s.deletions for s in stats)
    summary = " " + _plural(len(stats), "file") + " changed"
    if insertions:
        summary += f", {_plural(insertions, 'insertion')}(+)"
    if deletions:
        summary += f", {_plural(deletions, 'deletion')}(-)"
    lines.append(summary)
    return "\n".join(lines) + "\n"
