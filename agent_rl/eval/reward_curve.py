"""Does a reward curve rise? mean of the last steps minus the first, with a bootstrap interval.

A few RL steps on a handful of tasks are noisy, so "it went up" needs an interval: each side
is resampled with replacement and the 95% percentile interval of the difference of means is
reported. `rises` is true only when the whole interval is above zero.

The unit resampled is the episode when the run's rollouts are at hand (rollouts/step-N.jsonl):
the episodes of the first `window` steps against those of the last `window`, each episode one
draw of the policy's reward at that stage of training. With only the per-step means (3 numbers
a side) the interval mostly measures how few numbers there are.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence


def bootstrap_diff(first: Sequence[float], last: Sequence[float], *, draws: int = 10000,
                   seed: int = 0) -> dict[str, float]:
    """mean(last) - mean(first) and its 95% percentile bootstrap interval."""
    if not first or not last:
        raise ValueError("both sides need at least one value")
    rng = random.Random(seed)
    diffs = sorted(
        sum(rng.choices(last, k=len(last))) / len(last) - sum(rng.choices(first, k=len(first))) / len(first)
        for _ in range(draws))
    return {"first_mean": sum(first) / len(first), "last_mean": sum(last) / len(last),
            "diff": sum(last) / len(last) - sum(first) / len(first),
            "ci_low": diffs[int(0.025 * draws)], "ci_high": diffs[int(0.975 * draws) - 1]}


def reward_curve(rewards: Sequence[float], window: int = 3,
                 episodes: Sequence[Sequence[float]] | None = None) -> dict[str, Any]:
    """The per-step rewards with the first/last `window` comparison (`rises`: CI above 0).

    `episodes`, when given, holds each step's episode rewards (aligned with `rewards`): the
    interval then resamples episodes, and `unit` says which was resampled."""
    rewards = [float(r) for r in rewards]
    if len(rewards) < 2 * window:
        return {"rewards": rewards, "window": window,
                "note": f"fewer than {2 * window} steps: no first/last comparison"}
    if episodes is not None:
        if len(episodes) != len(rewards):
            raise ValueError(f"{len(episodes)} steps of episode rewards for {len(rewards)} step rewards")
        first = [float(r) for step in episodes[:window] for r in step]
        last = [float(r) for step in episodes[-window:] for r in step]
        stats, unit = bootstrap_diff(first, last), "episode"
        stats.update(first_episodes=len(first), last_episodes=len(last))
    else:
        stats, unit = bootstrap_diff(rewards[:window], rewards[-window:]), "step"
    return {"rewards": rewards, "window": window, "unit": unit, **stats, "rises": stats["ci_low"] > 0}


def step_rewards(metrics_path: str | Path, key: str = "reward_mean") -> list[float]:
    """`key` of every step row of a run's metrics.jsonl (event rows have no such key)."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [float(row[key]) for row in rows if row.get(key) is not None]


def episode_rewards(rollout_dir: str | Path) -> list[list[float]]:
    """Each step's graded episode rewards, from a run's rollouts/step-N.jsonl in step order
    (episodes that failed, which never train and are not in the step's reward_mean, left out)."""
    steps = []
    for path in sorted(Path(rollout_dir).glob("step-*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        steps.append([float(row["reward"]) for row in rows if row.get("error") is None])
    return steps
