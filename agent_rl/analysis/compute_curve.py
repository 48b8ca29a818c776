"""Reward against compute: the sigmoid of ScaleRL, fitted and extrapolated.

    R(C) = R0 + (A − R0) / (1 + (C_mid / C)^B)

A is the asymptote (what more compute buys at most), C_mid the compute at half the gain,
B the steepness. With x = ln C and m = ln C_mid the curve is a logistic in x,
R0 + (A − R0)·s with s = 1 / (1 + exp(−B (x − m))), which the fit uses: for fixed (B, m) the
model is linear in (R0, A), so a coarse grid over (ln B, m) solved by linear least squares
finds a start no local optimiser could miss, and Levenberg-Marquardt on all parameters (B
through ln B, so it stays positive) refines it. numpy only: scipy is not a dependency.

R0 is fitted unless given (`r0=`): ScaleRL fixes it to the starting reward; a run that starts
well above C = 0 may prefer to fit it. Intervals: percentile bootstrap over the points
(resampled with replacement, each resample refitted from the full fit).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

MIN_POINTS = 5  # four parameters need at least one point of slack
PARAMS = ("A", "R0", "C_mid", "B")


def sigmoid_curve(compute: np.ndarray | Sequence[float], A: float, R0: float, C_mid: float, B: float) -> np.ndarray:
    """R(C) for C > 0."""
    c = np.asarray(compute, dtype=float)
    return R0 + (A - R0) / (1.0 + (C_mid / c) ** B)


@dataclass(frozen=True)
class SigmoidFit:
    A: float
    R0: float
    C_mid: float
    B: float
    rmse: float
    points: int
    r0_fixed: bool
    intervals: dict[str, tuple[float, float]]  # parameter → (low, high) at `level`
    level: float
    bootstrap_fits: int  # resamples that fitted (degenerate ones are skipped)

    def predict(self, compute: np.ndarray | Sequence[float]) -> np.ndarray:
        return sigmoid_curve(compute, self.A, self.R0, self.C_mid, self.B)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["intervals"] = {k: list(v) for k, v in self.intervals.items()}
        return out


def check_points(compute: Sequence[float], reward: Sequence[float], min_points: int = MIN_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The points as arrays, or a ValueError saying what is wrong with them."""
    c = np.asarray(compute, dtype=float)
    r = np.asarray(reward, dtype=float)
    if c.ndim != 1 or c.shape != r.shape:
        raise ValueError(f"compute and reward must be 1-D and the same length (got {c.shape} and {r.shape})")
    if len(c) < min_points:
        raise ValueError(f"the compute-curve fit needs at least {min_points} points (got {len(c)}): "
                         f"the sigmoid has 4 parameters; train for more steps or log more often")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(r))):
        raise ValueError("compute and reward must be finite numbers (no NaN or inf)")
    if np.any(c <= 0):
        raise ValueError(f"compute must be positive (the curve is in log compute); smallest is {c.min()}")
    if np.any(np.diff(c) <= 0):
        raise ValueError("compute must be strictly increasing (cumulative compute, one point per value)")
    return c, r


def _basis(x: np.ndarray, log_b: float, m: float) -> np.ndarray:
    z = np.clip(math.exp(log_b) * (x - m), -500, 500)
    return 1.0 / (1.0 + np.exp(-z))


def _linear_part(x: np.ndarray, r: np.ndarray, log_b: float, m: float, r0: float | None) -> tuple[float, float, float]:
    """Best (A, R0) for a fixed shape, and the squared error."""
    s = _basis(x, log_b, m)
    if r0 is None:
        design = np.stack([s, 1.0 - s], axis=1)
        coef, *_ = np.linalg.lstsq(design, r, rcond=None)
        a, r0_hat = float(coef[0]), float(coef[1])
    else:
        denom = float(s @ s)
        a = r0 + (float(s @ (r - r0)) / denom if denom > 0 else 0.0)
        r0_hat = r0
    sse = float(np.sum((r0_hat + (a - r0_hat) * s - r) ** 2))
    return a, r0_hat, sse


def _grid_start(x: np.ndarray, r: np.ndarray, r0: float | None) -> np.ndarray:
    span = max(x[-1] - x[0], 1e-6)
    best = None
    for log_b in np.log(np.geomspace(0.05 / span * 4, 50.0 / span * 4, 25)):
        for m in np.linspace(x[0] - span, x[-1] + 3 * span, 60):
            a, r0_hat, sse = _linear_part(x, r, float(log_b), float(m), r0)
            if best is None or sse < best[0]:
                best = (sse, a, r0_hat, float(m), float(log_b))
    assert best is not None
    return np.array(best[1:])  # A, R0, m, ln B


def _residuals_jacobian(theta: np.ndarray, x: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, r0, m, log_b = theta
    b = math.exp(log_b)
    s = _basis(x, log_b, m)
    ds = s * (1.0 - s)
    resid = r0 + (a - r0) * s - r
    jac = np.stack([s, 1.0 - s, -(a - r0) * b * ds, (a - r0) * ds * (x - m) * b], axis=1)
    return resid, jac


def _levenberg_marquardt(theta: np.ndarray, x: np.ndarray, r: np.ndarray, free: np.ndarray,
                         iterations: int = 200) -> np.ndarray:
    lam = 1e-3
    resid, jac = _residuals_jacobian(theta, x, r)
    cost = float(resid @ resid)
    for _ in range(iterations):
        j = jac[:, free]
        jtj = j.T @ j
        step = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-12), -j.T @ resid)
        trial = theta.copy()
        trial[free] += step
        t_resid, t_jac = _residuals_jacobian(trial, x, r)
        t_cost = float(t_resid @ t_resid)
        if t_cost < cost:
            converged = cost - t_cost < 1e-14 * max(cost, 1e-30)
            theta, resid, jac, cost, lam = trial, t_resid, t_jac, t_cost, max(lam / 3, 1e-12)
            if converged:
                break
        else:
            lam *= 4
            if lam > 1e12:
                break
    return theta


def _fit_theta(x: np.ndarray, r: np.ndarray, r0: float | None, start: np.ndarray | None = None) -> np.ndarray:
    theta = _grid_start(x, r, r0) if start is None else start.copy()
    if r0 is not None:
        theta[1] = r0
    free = np.array([True, r0 is None, True, True])
    return _levenberg_marquardt(theta, x, r, free)


def fit_sigmoid(compute: Sequence[float], reward: Sequence[float], *, r0: float | None = None,
                bootstrap: int = 200, level: float = 0.95, seed: int = 0,
                min_points: int = MIN_POINTS) -> SigmoidFit:
    """Least-squares fit of R(C) with percentile-bootstrap intervals for A, R0, C_mid and B.

    Raises ValueError for fewer than `min_points` points, non-positive or non-increasing compute.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    c, r = check_points(compute, reward, min_points)
    x = np.log(c)
    theta = _fit_theta(x, r, r0)
    resid, _ = _residuals_jacobian(theta, x, r)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        idx = np.sort(rng.integers(0, len(x), len(x)))
        if len(np.unique(idx)) < 4:  # fewer distinct points than parameters: nothing to fit
            continue
        samples.append(_fit_theta(x[idx], r[idx], r0, start=theta))
    intervals: dict[str, tuple[float, float]] = {}
    if samples:
        arr = np.array(samples)
        values = {"A": arr[:, 0], "R0": arr[:, 1], "C_mid": np.exp(arr[:, 2]), "B": np.exp(arr[:, 3])}
        tail = (1 - level) / 2 * 100
        intervals = {k: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for k, v in values.items()}
    return SigmoidFit(A=float(theta[0]), R0=float(theta[1]), C_mid=float(math.exp(theta[2])), B=float(math.exp(theta[3])),
                      rmse=float(math.sqrt(resid @ resid / len(x))), points=len(x), r0_fixed=r0 is not None,
                      intervals=intervals, level=level, bootstrap_fits=len(samples))


def cumulative_compute(per_step: Sequence[float | None], values: Sequence[float | None]) -> tuple[list[float], list[float]]:
    """(cumulative compute, value) points from per-step rows: a step with no value is left out
    (its compute still counts), and steps that add no compute are averaged into one point, so
    compute is strictly increasing as the fit requires."""
    if len(per_step) != len(values):
        raise ValueError(f"per-step compute ({len(per_step)}) and values ({len(values)}) differ in length")
    total = 0.0
    merged: dict[float, list[float]] = {}
    for spent, value in zip(per_step, values):
        total += float(spent or 0.0)
        if value is None or total <= 0:
            continue
        merged.setdefault(total, []).append(float(value))
    keys = sorted(merged)
    return keys, [sum(merged[k]) / len(merged[k]) for k in keys]
