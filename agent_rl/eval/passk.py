"""Unbiased pass@k and its aggregates: pure functions, no I/O.

For one task with n samples of which c are correct, the unbiased estimator of pass@k is
1 − C(n−c, k)/C(n, k) (Chen et al., 2021). The binomial coefficients overflow floats
for modest n, so the ratio is evaluated as the product ∏_{i=n−c+1}^{n} (1 − k/i), which
stays in [0, 1] at every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n is correct."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k needs integers, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}], got {k}")
    if n - c < k:
        # Every k-subset contains a correct sample.
        return 1.0
    failure = 1.0
    for i in range(n - c + 1, n + 1):
        failure *= 1.0 - k / i
    return 1.0 - failure


def default_ks(n: int) -> list[int]:
    """Powers of two up to n, plus n itself: the points of a log-2 pass@k curve."""
    if n < 1:
        raise ValueError(f"default_ks: n must be >= 1, got {n}")
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def parse_ks(text: str) -> list[int]:
    """'1,2,4' → [1, 2, 4]; names the bad item on error."""
    ks: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            k = int(item)
        except ValueError:
            raise ValueError(f"--k: {item!r} is not an integer (expected e.g. 1,2,4,8)") from None
        if k < 1:
            raise ValueError(f"--k: {k} must be >= 1")
        ks.append(k)
    if not ks:
        raise ValueError("--k: no values given (expected e.g. 1,2,4,8)")
    return sorted(set(ks))


@dataclass(frozen=True)
class MeanStderr:
    mean: float
    stderr: float


def pass_at_1_mean_stderr(counts: Sequence[tuple[int, int]]) -> MeanStderr:
    """Mean of per-task pass@1 (= c/n) and the standard error of that mean.

    Tasks are the unit of sampling (samples of one task are correlated), so the standard
    error is the sample standard deviation of per-task pass@1 over √(number of tasks).
    With a single task there is no spread across tasks; we fall back to the binomial
    error of its own samples, √(p(1−p)/n).
    """
    if not counts:
        raise ValueError("pass@1: no tasks")
    rates = [c / n for n, c in counts]
    mean = sum(rates) / len(rates)
    if len(rates) == 1:
        n = counts[0][0]
        return MeanStderr(mean, math.sqrt(mean * (1.0 - mean) / n))
    var = sum((r - mean) ** 2 for r in rates) / (len(rates) - 1)
    return MeanStderr(mean, math.sqrt(var / len(rates)))


def aggregate_pass_at_k(counts: Mapping[str, tuple[int, int]], ks: Iterable[int]) -> dict[int, float]:
    """Mean over tasks of pass@k for each k that every task has enough samples for.

    `counts` maps task id → (n, c). A k larger than some task's n is left out rather than
    estimated from fewer samples, so every point of the curve averages the same tasks.
    """
    if not counts:
        return {}
    min_n = min(n for n, _ in counts.values())
    out: dict[int, float] = {}
    for k in sorted(set(ks)):
        if 1 <= k <= min_n:
            out[k] = sum(pass_at_k(n, c, k) for n, c in counts.values()) / len(counts)
    return out
