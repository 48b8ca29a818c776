"""The micro-batch plans (pure): rank split and token-budget packing."""
from __future__ import annotations

import pytest

from agent_rl.algo.microbatch import plan_micro_batches, split_for_ranks


def test_ranks_take_strided_shares_that_cover_the_rows_once():
    rows = [7, 3, 5, 0, 2]
    shares = [split_for_ranks(rows, r, 2) for r in range(2)]
    assert shares == [[7, 5, 2], [3, 0]]
    assert sorted(sum(shares, [])) == sorted(rows)
    with pytest.raises(ValueError, match="outside a world of 2"):
        split_for_ranks(rows, 2, 2)


def test_without_a_token_budget_rows_keep_their_order():
    assert plan_micro_batches([4, 1, 3, 0, 2], [1] * 5, 2) == [[4, 1], [3, 0], [2]]


def test_token_budget_packs_short_rows_together_and_isolates_long_ones():
    lengths = [100, 10, 12, 11, 90, 9]
    groups = plan_micro_batches(range(6), lengths, max_rows=4, max_tokens=50)
    assert sorted(sum(groups, [])) == list(range(6))
    for group in groups:
        assert len(group) <= 4
        assert len(group) == 1 or len(group) * max(lengths[r] for r in group) <= 50
    assert [5, 1, 3, 2] in groups  # the four short rows share one micro-batch
    assert [4] in groups and [0] in groups  # each long row alone (one alone may exceed the budget)


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="max_rows"):
        plan_micro_batches([0], [1], 0)
    with pytest.raises(ValueError, match="max_tokens"):
        plan_micro_batches([0], [1], 1, 0)
