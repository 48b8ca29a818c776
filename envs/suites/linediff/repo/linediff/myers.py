"""Myers' O(ND) difference algorithm: which items of two sequences stay matched.

E. Myers, "An O(ND) Difference Algorithm and Its Variations" (1986). For every edit distance
d we record the furthest-reaching path on each diagonal k = x - y, then walk the recorded
frontiers backwards from (len(a), len(b)) to recover the path.
"""
from __future__ import annotations

from typing import Hashable, Sequence


def common_affixes(a: Sequence[Hashable], b: Sequence[Hashable]) -> tuple[int, int]:
    """Lengths of the common prefix and suffix; the suffix never overlaps the prefix."""
    limit = min(len(a), len(b))
    prefix = 0
    while prefix < limit and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    # For a = [x, x] and b = [x] the single x is either prefix or suffix, not both.
    while suffix < limit - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    return prefix, suffix


def _frontiers(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[dict[int, int]]:
    """frontiers[d][k]: the largest x reached on diagonal k with d edits."""
    n, m = len(a), len(b)
    reach: dict[int, int] = {1: 0}  # a virtual start so that d = 0 begins at (0, 0)
    frontiers = []
    for d in range(n + m + 1):
        current: dict[int, int] = {}
        for k in range(-d, d + 1, 2):
            # Step down (an insertion) from diagonal k+1, or right (a deletion) from k-1:
            # whichever got further.
            if k == -d or (k != d and reach[k - 1] < reach[k + 1]):
                x = reach[k + 1]
            else:
                x = reach[k - 1] + 1
            y = x - k
            while x < n and y < m and a[x] == b[y]:
                x, y = x + 1, y + 1
            current[k] = x
            if x >= n and y >= m:
                frontiers.append(current)
                return frontiers
        frontiers.append(current)
        reach = current
    raise AssertionError("unreachable: d = n + m always reaches the end")


def matched_pairs(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[tuple[int, int]]:
    """(i, j) pairs with a[i] == b[j] that a shortest edit script keeps, in increasing order."""
    frontiers = _frontiers(a, b)
    pairs: list[tuple[int, int]] = []
    x, y = len(a), len(b)
    for d in range(len(frontiers) - 1, 0, -1):
        previous = frontiers[d - 1]
        k = x - y
        if k == -d or (k != d and previous[k - 1] < previous[k + 1]):
            prev_k = k + 1
            start_x = previous[prev_k]  # moved down: x unchanged
        else:
            prev_k = k - 1
            start_x = previous[prev_k] + 1  # moved right
        start_y = start_x - k
        while x > start_x and y > start_y:  # the snake after the edit
            x, y = x - 1, y - 1
            pairs.append((x, y))
        x, y = previous[prev_k], previous[prev_k] - prev_k
    while x > 0 and y > 0:  # d = 0: the leading snake
        x, y = x - 1, y - 1
        pairs.append((x, y))
    pairs.reverse()
    return pairs
