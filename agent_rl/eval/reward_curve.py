"""Does a reward curve rise? mean of the last steps minus the first, with a bootstrap interval.

A few RL steps on a handful of tasks are noisy, so "it went up" needs an interval: each side
is resampled with replacement and the 95% percentile interval of the difference of means is
reported. `rises` is true only when the whole interval is above zero.
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


def reward_curve(rewards: Sequence[float], window: int = 3) -> dict[str, Any]:
    """The per-step rewards with the first/last `window` comparison (`rises`: CI above 0)."""
    rewards = [float(r) for r in rewards]
    if len(rewards) < 2 * window:
        return {"rewards": rewards, "window": window,
                "note": f"fewer than {2 * window} steps: no first/last comparison"}
    stats = bootstrap_diff(rewards[:window], rewards[-window:])
    return {"rewards": rewards, "window": window, **stats, "rises": stats["ci_low"] > 0}


def step_rewards(metrics_path: str | Path, key: str = "reward_mean") -> list[float]:
    """`key` of every step row of a run's metrics.jsonl (event rows have no such key)."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [float(row[key]) for row in rows if row.get(key) is not None]
