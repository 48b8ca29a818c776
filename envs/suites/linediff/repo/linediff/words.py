"""Word-level diffs of two strings, rendered like `git diff --word-diff=plain`."""
from __future__ import annotations

import re

from .opcodes import opcodes

# Words, runs of whitespace, and single punctuation marks are the units that change.
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")

_MARKERS = {
    "equal": ("", ""),
    "delete": ("[-", "-]"),
    "insert": ("{+", "+}"),
}


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def word_diff(a: str, b: str) -> list[tuple[str, str]]:
    """[(tag, text)] with tag in equal/delete/insert; a replaced span is a delete then an insert."""
    old, new = tokenize(a), tokenize(b)
    segments: list[tuple[str, str]] = []

    def add(tag: str, text: str) -> None:
        if not text:
            return
        if segments and segments[-1][0] == tag:
            segments[-1] = (tag, segments[-1][1] + text)
        else:
            segments.append((tag, text))

    for code in opcodes(old, new):
        if code.tag == "equal":
            add("equal", "".join(old[code.i1 : code.i2]))
            continue
        add("delete", "".join(old[code.i1 : code.i2]))
        add("insert", "".join(new[code.j1 : code.j2]))
    return segments


def render_word_diff(a: str, b: str) -> str:
    """'the [-quick-]{+slow+} fox'"""
    return "".join(_MARKERS[tag][0] + text + _MARKERS[tag][1] for tag, text in word_diff(a, b))
