"""Trainer pieces that need no model: batch building, grouping, plateau detection, LR schedule."""
from __future__ import annotations

import pytest
import torch

from agent_rl.algo.batch import ShapingSettings, build_train_batch
from agent_rl.train.policy import lr_lambda as _lr_lambda
from agent_rl.rollout.deadlines import apply_partial_group_policy
from agent_rl.train.trainer import group_by_task, reward_plateaued
from agent_rl.rollout.trajectory import Trajectory


def _traj(task, reward, prompt, response, mask, *, turns=1, truncated=False, g=0, error=None):
    return Trajectory(
        task_id=task, prompt_ids=prompt, response_ids=response, loss_mask=mask,
        behaviour_logprobs=[-0.5 * m for m in mask], reward=reward, num_turns=turns,
        truncated=truncated, group_index=g, error=error,
    )


def test_batch_layout_masks_and_advantages():
    group = [
        _traj("a", 1.0, [1, 2], [3, 4, 5], [1, 0, 1], g=0),
        _traj("a", 0.0, [1, 2, 9], [6], [1], g=1),
    ]
    batch = build_train_batch([group], ShapingSettings(estimator="drgrpo"), pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [1, 2, 9, 6, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # Only sampled response tokens are scored; env tokens (mask 0), prompt and padding are not.
    assert batch.score_mask.tolist() == [[0, 0, 1, 0, 1], [0, 0, 0, 1, 0]]
    assert batch.behaviour_logprobs.tolist() == [[0, 0, -0.5, 0, -0.5], [0, 0, 0, -0.5, 0]]
    assert batch.advantages.tolist() == pytest.approx([0.5, -0.5])
    sub = batch.rows(torch.tensor([1]))
    assert sub.input_ids.tolist() == [[1, 2, 9, 6]]  # trimmed to its own length


def test_mask_mode_keeps_reward_but_drops_truncated_tokens():
    group = [
        _traj("a", 1.0, [1], [2, 3], [1, 1]),
        _traj("a", 0.0, [1], [2, 3], [1, 1], truncated=True, g=1),
    ]
    batch = build_train_batch([group], ShapingSettings(mode="mask"), pad_id=0)
    assert batch.score_mask[1].sum() == 0 and batch.score_mask[0].sum() == 2
    assert batch.advantages.tolist() == pytest.approx([1.0, -1.0], abs=1e-5)


def test_turn_penalty_shapes_the_advantage():
    group = [_traj("a", 0.0, [1], [2], [1], turns=2), _traj("a", 0.0, [1], [2], [1], turns=4, g=1)]
    batch = build_train_batch([group], ShapingSettings(mode="turns", turn_threshold=3, max_turns=5, estimator="drgrpo"), 0)
    assert batch.shaped_rewards == pytest.approx([0.0, -0.5])
    assert batch.advantages.tolist() == pytest.approx([0.25, -0.25])


def test_grouping_keeps_draw_order_and_the_partial_group_policy_drops_broken_episodes():
    trajs = [
        _traj("b", 1.0, [1], [2], [1], g=1),
        _traj("a", 0.0, [1], [2], [1], g=0),
        _traj("b", 0.0, [1], [2], [1], g=0),
        _traj("a", 0.0, [1], [2], [1], g=1, error="SandboxDied: gone"),
    ]
    groups = group_by_task(trajs, ["b", "a", "c"])
    assert [[(t.task_id, t.group_index) for t in g] for g in groups] == [[("b", 0), ("b", 1)], [("a", 0), ("a", 1)]]
    # "keep": a group trains on its usable members if two remain (one has no group baseline).
    kept, dropped = apply_partial_group_policy(groups, 2, "keep")
    assert [[(t.task_id, t.group_index) for t in g] for g in kept] == [[("b", 0), ("b", 1)]] and dropped == 1
    three = groups + [[_traj("c", 1.0, [1], [2], [1], g=i) for i in range(2)]
                      + [_traj("c", 0.0, [1], [2], [1], g=2, error="step_deadline: cut")]]
    kept, dropped = apply_partial_group_policy(three, 3, "keep")
    assert [len(g) for g in kept] == [2, 2] and dropped == 1
    kept, dropped = apply_partial_group_policy(three, 3, "drop")
    assert kept == [] and dropped == 3


def test_reward_plateau():
    assert not reward_plateaued([0.1, 0.2, 0.3], window=2, min_delta=0.01)  # not enough history
    assert not reward_plateaued([0.1, 0.1, 0.3, 0.3], window=2, min_delta=0.05)  # still improving
    assert reward_plateaued([0.3, 0.3, 0.3, 0.31], window=2, min_delta=0.05)


def test_lr_schedules():
    warm = _lr_lambda(2, 10, "constant")
    assert [warm(s) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    linear = _lr_lambda(0, 10, "linear")
    assert linear(0) == 1.0 and linear(5) == pytest.approx(0.5) and linear(10) == 0.0
    cosine = _lr_lambda(0, 10, "cosine")
    assert cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
