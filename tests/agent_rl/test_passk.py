"""pass@k against values worked by hand, and the aggregates built on it."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest

from agent_rl.eval.passk import (
    aggregate_pass_at_k,
    default_ks,
    parse_ks,
    pass_at_1_mean_stderr,
    pass_at_k,
)


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 0, 1, 0.0),  # c = 0: never
        (5, 0, 5, 0.0),  # c = 0 and k = n
        (5, 5, 1, 1.0),  # c = n: always
        (4, 1, 1, 1 / 4),  # 1 - C(3,1)/C(4,1) = 1 - 3/4
        (4, 1, 2, 1 / 2),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 1, 4, 1.0),  # k = n with one correct: the whole set contains it
        (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2) = 1 - 1/6
        (4, 3, 2, 1.0),  # n - c < k: every pair holds a correct sample
        (10, 3, 5, 11 / 12),  # 1 - C(7,5)/C(10,5) = 1 - 21/252
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_where_binomials_overflow_floats() -> None:
    n, c, k = 2000, 7, 1000
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert math.comb(n, k) > 10**308  # float(C(n, k)) would overflow
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_impossible_inputs(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)


def test_default_and_parsed_ks() -> None:
    assert default_ks(1) == [1]
    assert default_ks(4) == [1, 2, 4]
    assert default_ks(10) == [1, 2, 4, 8, 10]
    assert parse_ks("4, 1,2,2") == [1, 2, 4]
    with pytest.raises(ValueError, match="'x' is not an integer"):
        parse_ks("1,x")
    with pytest.raises(ValueError, match="must be >= 1"):
        parse_ks("0")


def test_aggregate_averages_tasks_and_drops_k_beyond_the_smallest_n() -> None:
    counts = {"a": (4, 1), "b": (4, 4), "c": (2, 0)}
    curve = aggregate_pass_at_k(counts, [1, 2, 4])
    assert list(curve) == [1, 2]  # task c has only 2 samples
    assert curve[1] == pytest.approx((1 / 4 + 1 + 0) / 3)
    assert curve[2] == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_pass_at_1_mean_and_standard_error() -> None:
    # per-task pass@1: 0.25, 1.0, 0.0 → mean 5/12; sample sd over tasks / sqrt(3)
    res = pass_at_1_mean_stderr([(4, 1), (4, 4), (4, 0)])
    rates = [0.25, 1.0, 0.0]
    mean = sum(rates) / 3
    sd = math.sqrt(sum((r - mean) ** 2 for r in rates) / 2)
    assert res.mean == pytest.approx(5 / 12)
    assert res.stderr == pytest.approx(sd / math.sqrt(3))
    single = pass_at_1_mean_stderr([(4, 1)])  # one task: binomial error of its samples
    assert single.stderr == pytest.approx(math.sqrt(0.25 * 0.75 / 4))
