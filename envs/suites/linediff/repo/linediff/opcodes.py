"""Edit scripts as opcodes: what to do to turn a[i1:i2] into b[j1:j2]."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

from .myers import common_affixes, matched_pairs

TAGS = ("equal", "delete", "insert", "replace")


@dataclass(frozen=True)
class Opcode:
    tag: str
    i1: int
    i2: int
    j1: int
    j2: int


def matches(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[tuple[int, int]]:
    """Matched (i, j) pairs of a shortest edit script.

    The common prefix and suffix are matched directly: most real edits touch a few lines in
    the middle of a file, and Myers then only has to look at those.
    """
    prefix, suffix = common_affixes(a, b)
    middle = matched_pairs(a[prefix : len(a) - suffix], b[prefix : len(b) - suffix])
    pairs = [(i, i) for i in range(prefix)]
    pairs += [(prefix + i, prefix + j) for i, j in middle]
    pairs += [(len(a) - suffix + s, len(b) - suffix + s) for s in range(suffix)]
    return pairs


def opcodes(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[Opcode]:
    """Opcodes covering both sequences in order; a gap on both sides at once is a 'replace'."""
    codes: list[Opcode] = []
    i = j = 0
    # The sentinel pair (len(a), len(b)) flushes the gap after the last match.
    for mi, mj in matches(a, b) + [(len(a), len(b))]:
        if mi > i or mj > j:
            tag = "replace" if mi > i and mj > j else ("delete" if mi > i else "insert")
            codes.append(Opcode(tag, i, mi, j, mj))
        if mi < len(a):
            last = codes[-1] if codes else None
            if last is not None and last.tag == "equal" and last.i2 == mi and last.j2 == mj:
                codes[-1] = Opcode("equal", last.i1, mi + 1, last.j1, mj + 1)
            else:
                codes.append(Opcode("equal", mi, mi + 1, mj, mj + 1))
        i, j = mi + 1, mj + 1
    return codes


def similarity(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """2·M / T with M matched items and T items in total: 1.0 for equal sequences, 0.0 for disjoint ones."""
    total = len(a) + len(b)
    if total == 0:
        return 1.0
    return 2 * len(matches(a, b)) / total
