"""Group advantages, reward shaping for overlong answers, and dynamic sampling: pure functions.

A *group* is the G trajectories sampled for one task. Advantages compare each trajectory
with its own group, so no value network is needed. Rewards here are plain Python floats;
only the trainer turns them into tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generic, Literal, Sequence, TypeVar

AdvantageEstimator = Literal["grpo", "drgrpo", "rloo"]
ADVANTAGE_ESTIMATORS: tuple[str, ...] = ("grpo", "drgrpo", "rloo")
OverlongMode = Literal["none", "mask", "soft", "turns"]
OVERLONG_MODES: tuple[str, ...] = ("none", "mask", "soft", "turns")

T = TypeVar("T")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _std(values: Sequence[float]) -> float:
    # Population std (divide by G), as in DAPO/verl; G−1 would blow up for G = 2.
    mu = _mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / len(values))


def group_advantages(rewards: Sequence[float], estimator: str = "grpo", eps: float = 1e-6) -> list[float]:
    """Advantages for one group of rewards.

    grpo:   (R_i − mean) / (std + eps)        (GRPO, DAPO)
    drgrpo: R_i − mean                         (Dr. GRPO: no std, which biases toward easy/hard groups)
    rloo:   R_i − mean of the *other* G−1      (leave-one-out baseline; = G/(G−1)·(R_i − mean))
    A group whose rewards are all equal gets all-zero advantages for every estimator.
    """
    if len(rewards) == 0:
        return []
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {', '.join(ADVANTAGE_ESTIMATORS)}")
    values = [float(r) for r in rewards]
    if has_zero_variance(values):
        return [0.0] * len(values)  # exact zeros: float noise in the mean must not leak a signal
    mu = _mean(values)
    if estimator == "grpo":
        std = _std(values)
        return [(v - mu) / (std + eps) for v in values]
    if estimator == "drgrpo":
        return [v - mu for v in values]
    g = len(values)
    if g == 1:
        return [0.0]  # no other sample to compare with
    total = sum(values)
    return [v - (total - v) / (g - 1) for v in values]


def has_zero_variance(outcomes: Sequence[float], tol: float = 1e-9) -> bool:
    """True when every outcome in the group is the same: such a group teaches nothing."""
    return len(outcomes) == 0 or max(outcomes) - min(outcomes) <= tol


def soft_overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """DAPO's soft overlong punishment on response length |y| (tokens).

    0 if |y| ≤ L_max − L_cache; ((L_max − L_cache) − |y|) / L_cache if |y| ≤ L_max; −1 beyond.
    """
    if cache_length <= 0 or cache_length > max_length:
        raise ValueError(f"cache_length must be in (0, max_length={max_length}], got {cache_length}")
    threshold = max_length - cache_length
    if length <= threshold:
        return 0.0
    if length <= max_length:
        return (threshold - length) / cache_length
    return -1.0


def turn_penalty(num_turns: int, turn_threshold: int, max_turns: int) -> float:
    """Nebius (arXiv 2508.03501) length penalty in turns: 0 if T < T_thr, else (T_thr − T)/(T_max − T_thr)."""
    if max_turns <= turn_threshold:
        raise ValueError(f"max_turns ({max_turns}) must exceed turn_threshold ({turn_threshold})")
    if num_turns < turn_threshold:
        return 0.0
    return (turn_threshold - num_turns) / (max_turns - turn_threshold)


@dataclass(frozen=True)
class ShapedReward:
    reward: float  # outcome + penalty: what the advantage is computed from
    penalty: float
    train: bool  # False: masked out of the loss (overlong "mask" mode)


def shape_reward(
    outcome: float,
    *,
    mode: str,
    truncated: bool,
    response_length: int = 0,
    num_turns: int = 0,
    max_length: int = 0,
    cache_length: int = 0,
    turn_threshold: int = 0,
    max_turns: int = 0,
) -> ShapedReward:
    """Apply the selected overlong handling to one trajectory's outcome reward.

    none:  reward unchanged.
    mask:  truncated trajectories keep their reward (for the group statistics) but are not trained on.
    soft:  DAPO's soft token-length penalty.
    turns: Nebius' turn-count penalty; truncated trajectories are kept as negatives of looping.
    """
    if mode == "none":
        return ShapedReward(outcome, 0.0, True)
    if mode == "mask":
        return ShapedReward(outcome, 0.0, not truncated)
    if mode == "soft":
        penalty = soft_overlong_penalty(response_length, max_length, cache_length)
        return ShapedReward(outcome + penalty, penalty, True)
    if mode == "turns":
        penalty = turn_penalty(num_turns, turn_threshold, max_turns)
        return ShapedReward(outcome + penalty, penalty, True)
    raise ValueError(f"unknown overlong mode {mode!r}; choose one of {', '.join(OVERLONG_MODES)}")


@dataclass
class DynamicSamplingResult(Generic[T]):
    kept: list[list[T]]  # informative groups, at most `target_groups`
    rounds: int  # generation rounds it took
    groups_seen: int
    zero_variance_groups: int
    full: bool  # reached target_groups before hitting the round cap

    @property
    def zero_variance_fraction(self) -> float:
        return self.zero_variance_groups / self.groups_seen if self.groups_seen else 0.0


def dynamic_sample(
    generate_round: Callable[[int], list[list[T]]],
    outcome_of: Callable[[T], float],
    target_groups: int,
    max_rounds: int,
    enabled: bool = True,
) -> DynamicSamplingResult[T]:
    """DAPO's dynamic sampling: keep drawing groups until `target_groups` informative ones.

    `generate_round(n_groups_wanted)` produces a fresh list of groups. A group whose *raw
    outcome* (before length shaping) has zero variance is dropped: all-pass or all-fail groups
    give zero advantage and would only dilute the batch. Stops after `max_rounds` rounds even
    if the batch is not full, so a too-hard or too-easy task set cannot loop forever.
    With `enabled=False` a single round is drawn and nothing is dropped.
    """
    if target_groups < 1 or max_rounds < 1:
        raise ValueError("target_groups and max_rounds must be >= 1")
    kept: list[list[T]] = []
    rounds = seen = zero_var = 0
    while len(kept) < target_groups and rounds < (max_rounds if enabled else 1):
        rounds += 1
        for group in generate_round(target_groups - len(kept) if enabled else target_groups):
            seen += 1
            if has_zero_variance([outcome_of(item) for item in group]):
                zero_var += 1
                if enabled:
                    continue
            if len(kept) < target_groups:
                kept.append(group)
    return DynamicSamplingResult(kept, rounds, seen, zero_var, full=len(kept) >= target_groups)
