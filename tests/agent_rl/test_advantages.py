"""Advantages, overlong shaping and dynamic sampling against values worked out by hand."""
from __future__ import annotations

import pytest

from agent_rl.algo.advantages import (
    dynamic_sample,
    group_advantages,
    has_zero_variance,
    shape_reward,
    soft_overlong_penalty,
    turn_penalty,
)


def test_grpo_by_hand():
    # mean 0.5, population std 0.5
    assert group_advantages([1, 0, 0, 1], "grpo") == pytest.approx([1, -1, -1, 1], abs=1e-5)


def test_drgrpo_is_mean_only():
    assert group_advantages([1, 0, 0, 1], "drgrpo") == pytest.approx([0.5, -0.5, -0.5, 0.5])
    assert group_advantages([3, 1], "drgrpo") == pytest.approx([1, -1])


def test_rloo_by_hand():
    # baseline for each sample is the mean of the others
    assert group_advantages([1, 0, 0], "rloo") == pytest.approx([1.0, -0.5, -0.5])
    assert group_advantages([2, 4, 6, 8], "rloo") == pytest.approx([2 - 6, 4 - 16 / 3, 6 - 14 / 3, 8 - 4])


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo"])
def test_all_equal_rewards_give_zero_advantages(estimator):
    assert group_advantages([0.7, 0.7, 0.7], estimator) == pytest.approx([0, 0, 0])
    assert group_advantages([1.0], estimator) == pytest.approx([0.0])
    assert group_advantages([], estimator) == []


def test_unknown_estimator_is_named():
    with pytest.raises(ValueError, match="'ppo'"):
        group_advantages([1, 0], "ppo")


def test_zero_variance():
    assert has_zero_variance([1, 1, 1])
    assert has_zero_variance([0.0])
    assert not has_zero_variance([1, 0])


def test_soft_overlong_penalty_by_hand():
    # L_max 100, L_cache 20: free up to 80, linear to −1 at 100, −1 beyond
    assert soft_overlong_penalty(80, 100, 20) == 0.0
    assert soft_overlong_penalty(90, 100, 20) == pytest.approx(-0.5)
    assert soft_overlong_penalty(100, 100, 20) == pytest.approx(-1.0)
    assert soft_overlong_penalty(150, 100, 20) == -1.0
    with pytest.raises(ValueError, match="cache_length"):
        soft_overlong_penalty(1, 100, 0)


def test_turn_penalty_by_hand():
    # T_thr 30, T_max 50
    assert turn_penalty(29, 30, 50) == 0.0
    assert turn_penalty(30, 30, 50) == 0.0
    assert turn_penalty(40, 30, 50) == pytest.approx(-0.5)
    assert turn_penalty(50, 30, 50) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="max_turns"):
        turn_penalty(1, 5, 5)


def test_shape_reward_modes():
    assert shape_reward(1.0, mode="none", truncated=True).train
    masked = shape_reward(0.0, mode="mask", truncated=True)
    assert masked.reward == 0.0 and not masked.train
    soft = shape_reward(1.0, mode="soft", truncated=False, response_length=90, max_length=100, cache_length=20)
    assert soft.reward == pytest.approx(0.5) and soft.penalty == pytest.approx(-0.5)
    turns = shape_reward(0.0, mode="turns", truncated=True, num_turns=50, turn_threshold=30, max_turns=50)
    assert turns.reward == pytest.approx(-1.0) and turns.train  # overflow kept as a negative example
    with pytest.raises(ValueError, match="overlong mode 'cut'"):
        shape_reward(0.0, mode="cut", truncated=False)


def _rounds(*rounds):
    """A generate_round that replays scripted rounds and records how many groups were asked for."""
    asked = []
    queue = list(rounds)

    def generate(n):
        asked.append(n)
        return queue.pop(0)

    return generate, asked


def test_dynamic_sampling_fills_the_batch_over_rounds():
    generate, asked = _rounds([[1, 1], [1, 0]], [[0, 0], [0, 1]], [[1, 0]])
    result = dynamic_sample(generate, float, target_groups=3, max_rounds=5)
    assert result.kept == [[1, 0], [0, 1], [1, 0]]
    assert result.rounds == 3 and result.full
    assert asked == [3, 2, 1]
    assert result.zero_variance_groups == 2 and result.groups_seen == 5
    assert result.zero_variance_fraction == pytest.approx(0.4)


def test_dynamic_sampling_stops_at_the_round_cap():
    generate, _ = _rounds([[1, 1]], [[0, 0]], [[1, 0]])
    result = dynamic_sample(generate, float, target_groups=2, max_rounds=2)
    assert result.kept == [] and result.rounds == 2 and not result.full


def test_dynamic_sampling_disabled_keeps_everything_in_one_round():
    generate, _ = _rounds([[1, 1], [1, 0]])
    result = dynamic_sample(generate, float, target_groups=2, max_rounds=5, enabled=False)
    assert result.kept == [[1, 1], [1, 0]] and result.rounds == 1 and result.zero_variance_groups == 1


def test_dynamic_sampling_uses_raw_outcome():
    # Shaped rewards differ (penalties) but the raw outcome is all-fail: still dropped.
    group = [{"outcome": 0.0, "shaped": -0.5}, {"outcome": 0.0, "shaped": 0.0}]
    generate, _ = _rounds([group])
    result = dynamic_sample(generate, lambda t: t["outcome"], target_groups=1, max_rounds=1)
    assert result.kept == []
