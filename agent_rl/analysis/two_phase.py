"""When planning entropy starts rising while execution entropy stays flat.

The two-phase picture of agent RL: execution (the action syntax) settles first, then the
planning tokens' entropy rises as strategy becomes what limits reward. Per-step entropies are
noisy, so "rising" and "flat" are judged against each series' own noise rather than with
absolute thresholds that would depend on the model:

* the noise σ of a series is estimated from its first differences (median |Δ| / 0.6745 / √2,
  robust to the trend and to outliers);
* over a sliding window of w steps, the least-squares slope has standard error
  σ · √(12 / (w³ − w)); planning *rises* when its slope exceeds z standard errors, execution
  is *flat* when its slope is within z standard errors of zero.

The onset is the first step of the first run of `sustain` consecutive windows where both hold
(default: half a window): one noisy window among the dozens a run has would otherwise pass
a z-test by chance, a sustained rise does not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def noise_sigma(values: Sequence[float]) -> float:
    """Robust per-step noise of a series from its first differences."""
    diffs = np.abs(np.diff(np.asarray(values, dtype=float)))
    return float(np.median(diffs) / 0.6745 / math.sqrt(2)) if len(diffs) else 0.0


def window_slopes(steps: np.ndarray, values: np.ndarray, window: int) -> np.ndarray:
    """Least-squares slope of each run of `window` consecutive points."""
    out = []
    for i in range(len(values) - window + 1):
        x, y = steps[i: i + window], values[i: i + window]
        xc = x - x.mean()
        out.append(float(xc @ (y - y.mean()) / (xc @ xc)))
    return np.array(out)


@dataclass(frozen=True)
class Onset:
    step: int | None  # first step of the first window where planning rises and execution is flat
    window: int
    z: float
    sustain: int
    planning_noise: float
    execution_noise: float


def planning_rise_onset(steps: Sequence[int], planning: Sequence[float], execution: Sequence[float],
                        *, window: int | None = None, z: float = 3.0, sustain: int | None = None) -> Onset:
    """See the module doc. `window` defaults to max(4, n // 5) steps; needs 2 windows of data."""
    s = np.asarray(steps, dtype=float)
    p = np.asarray(planning, dtype=float)
    e = np.asarray(execution, dtype=float)
    if not (len(s) == len(p) == len(e)):
        raise ValueError(f"steps ({len(s)}), planning ({len(p)}) and execution ({len(e)}) differ in length")
    w = window or max(4, len(s) // 5)
    if w < 3:
        raise ValueError(f"window must be at least 3 steps, got {w}")
    if len(s) < 2 * w:
        raise ValueError(f"finding the planning-entropy onset needs at least {2 * w} steps with both "
                         f"entropies (window {w}), got {len(s)}")
    # Standard error of a window's slope for unit step spacing; scaled by each series' noise.
    se_unit = math.sqrt(12.0 / (w ** 3 - w)) / max(float(np.median(np.diff(s))), 1e-12)
    sp, se = noise_sigma(p), noise_sigma(e)
    rising = window_slopes(s, p, w) > z * max(sp, 1e-12) * se_unit
    flat = np.abs(window_slopes(s, e, w)) <= z * max(se, 1e-12) * se_unit
    both = rising & flat
    k = sustain or max(1, w // 2)
    starts = [i for i in range(len(both) - k + 1) if both[i: i + k].all()]
    return Onset(int(s[starts[0]]) if starts else None, w, z, k, sp, se)
