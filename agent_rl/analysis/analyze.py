"""A run directory → the analysis dict that report.py writes (every number and plotted series).

Each section stands alone: one that cannot be computed (no checkpoint yet, a run logged
before the phase metrics existed, too few steps for the fit) is recorded as
`{"skipped": why}` and the others still run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agent_rl.analysis.run_dir import RunDir

log = logging.getLogger(__name__)

# compute axis → (label, per-step amount from a metrics row)
COMPUTE_AXES: dict[str, tuple[str, Callable[[dict[str, Any]], float | None]]] = {
    "trained_tokens": ("trained tokens", lambda row: row.get("trained_tokens")),
    "sampled_tokens": ("sampled tokens", lambda row: (row.get("response_tokens_mean") or 0.0)
                       * ((row.get("trajectories") or 0) - (row.get("error_trajectories") or 0))),
    "hours": ("wall-clock hours", lambda row: (row.get("step_time_s") or 0.0) / 3600.0),
    # What the run held: step time × its devices (GPUs, or the CPU threads it computes on).
    "device_hours": ("device hours", lambda row: None if row.get("devices") is None
                     else (row.get("step_time_s") or 0.0) * row["devices"] / 3600.0),
    # What it used: CPU seconds of the trainer process and its children (engine threads, harnesses).
    "cpu_hours": ("CPU hours", lambda row: None if row.get("cpu_time_s") is None else row["cpu_time_s"] / 3600.0),
}
PHASE_KEYS = ("planning_entropy", "execution_entropy", "planning_logprob", "execution_logprob")


@dataclass
class AnalyzeOptions:
    against: str | None = None  # the "before" weights (default: the run's base model)
    checkpoint: str | None = None  # the "after" weights (default: the latest checkpoint)
    compare_dtype: str | None = None  # None: the coarser stored dtype, per parameter
    rank_rtol: float = 1e-6
    rank_max_dim: int = 8192  # skip the rank of matrices whose smaller side is larger
    curve_metric: str = "reward_mean"
    compute_axis: str = "trained_tokens"
    r0: float | None = None
    bootstrap: int = 200
    onset_window: int | None = None
    eval_pairs: list[tuple[str, str]] = field(default_factory=list)  # explicit (base, trained) eval dirs
    skip_weights: bool = False


_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError)


def _section(name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return compute()
    except _ERRORS as exc:
        log.info("analyze: %s skipped: %s", name, exc)
        return {"skipped": str(exc)}


def analyze_run(path: str | Path, options: AnalyzeOptions | None = None) -> dict[str, Any]:
    opts = options or AnalyzeOptions()
    run = RunDir.open(path)
    return {
        "run_dir": str(run.root),
        "training_dir": str(run.training),
        "update": {"skipped": "--skip-weights"} if opts.skip_weights else _section("update", lambda: update_section(run, opts)),
        "two_phase": _section("two_phase", lambda: two_phase_section(run, opts)),
        "compute_curve": _section("compute_curve", lambda: compute_curve_section(run, opts)),
        "pass_at_k": _section("pass_at_k", lambda: passk_section(run, opts)),
    }


# ---------------------------------------------------------------------- update sparsity / rank


def _dtype(name: str) -> Any:
    from agent_rl.engines.models import resolve_dtype

    return resolve_dtype(name, "cpu")


def update_section(run: RunDir, opts: AnalyzeOptions) -> dict[str, Any]:
    from agent_rl.analysis.sparsity import param_change, sparsity_summary, update_rank
    from agent_rl.analysis.weights import iter_updates, shared_names

    before = run.endpoint(opts.against)
    after = run.endpoint(opts.checkpoint or "last")
    names, unmatched = shared_names(before, after)
    forced = _dtype(opts.compare_dtype) if opts.compare_dtype else None
    changes, ranks = [], {}
    for upd in iter_updates(before, after, names):
        if not upd.before.dtype.is_floating_point:
            continue
        dtype = forced or upd.stored_dtype
        changes.append(param_change(upd.name, upd.before, upd.after, dtype, upd.delta))
        if upd.delta.dim() == 2 and min(upd.delta.shape) <= opts.rank_max_dim:
            r = update_rank(upd.delta, opts.rank_rtol)
            ranks[upd.name] = {"effective_rank": r.effective_rank, "numerical_rank": r.numerical_rank,
                               "full_rank": r.full_rank, "effective_rank_fraction": r.effective_rank_fraction}
    summary = sparsity_summary(changes)
    fractions = [v["effective_rank_fraction"] for v in ranks.values() if v["numerical_rank"] > 0]
    return {
        "before": before.label, "after": after.label,
        "notes": before.notes + after.notes,
        "compare_dtype": opts.compare_dtype or "coarser stored dtype per parameter",
        "unmatched_parameters": unmatched,
        **summary,
        "rank_rtol": opts.rank_rtol,
        "ranks": ranks,
        "median_effective_rank_fraction": sorted(fractions)[len(fractions) // 2] if fractions else None,
    }


# ---------------------------------------------------------------------- two-phase dynamics


def two_phase_section(run: RunDir, opts: AnalyzeOptions) -> dict[str, Any]:
    from agent_rl.analysis.two_phase import planning_rise_onset

    rows = [r for r in run.metrics() if all(isinstance(r.get(k), (int, float)) for k in PHASE_KEYS)]
    if not rows:
        raise ValueError("metrics.jsonl has no step with planning_/execution_ entropy and logprob "
                         "(a run trained before the two-phase metrics were logged?)")
    series = {"steps": [r["step"] for r in rows], **{k: [float(r[k]) for r in rows] for k in PHASE_KEYS}}
    out: dict[str, Any] = {"series": series}
    try:
        onset = planning_rise_onset(series["steps"], series["planning_entropy"], series["execution_entropy"],
                                    window=opts.onset_window)
        out["onset"] = {"step": onset.step, "window": onset.window, "z": onset.z, "sustain": onset.sustain,
                        "planning_noise": onset.planning_noise, "execution_noise": onset.execution_noise}
    except ValueError as exc:
        out["onset"] = {"skipped": str(exc)}
    return out


# ---------------------------------------------------------------------- compute curve


def compute_curve_section(run: RunDir, opts: AnalyzeOptions) -> dict[str, Any]:
    from agent_rl.analysis.compute_curve import cumulative_compute, fit_sigmoid

    if opts.compute_axis not in COMPUTE_AXES:
        raise ValueError(f"unknown compute axis {opts.compute_axis!r}; expected one of {', '.join(COMPUTE_AXES)}")
    label, amount = COMPUTE_AXES[opts.compute_axis]
    rows = run.metrics()
    if rows and all(amount(r) is None for r in rows):
        raise ValueError(f"metrics.jsonl has no {label} (a run logged before they were recorded); "
                         "use --compute trained_tokens, sampled_tokens or hours")
    values = [r.get(opts.curve_metric) for r in rows]
    if not any(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"metrics.jsonl has no {opts.curve_metric!r} values")
    compute, metric = cumulative_compute([amount(r) for r in rows],
                                         [v if isinstance(v, (int, float)) else None for v in values])
    out: dict[str, Any] = {"metric": opts.curve_metric, "axis": opts.compute_axis, "axis_label": label,
                           "compute": compute, "values": metric}
    fit = fit_sigmoid(compute, metric, r0=opts.r0, bootstrap=opts.bootstrap)
    out["fit"] = fit.as_dict()
    return out


# ---------------------------------------------------------------------- pass@k


def passk_section(run: RunDir, opts: AnalyzeOptions) -> dict[str, Any]:
    from agent_rl.analysis.passk_curves import EvalPair, compare_pair, pipeline_pairs

    pairs = [EvalPair(f"pair {i + 1}", Path(b), Path(t)) for i, (b, t) in enumerate(opts.eval_pairs)]
    if not pairs:
        pairs = pipeline_pairs(run.root) or pipeline_pairs(run.training)
    if not pairs:
        raise ValueError(f"no evaluation directories to compare under {run.root} (pipeline eval-base-<split> / "
                         "eval-rl-<split>); pass --base-eval DIR --trained-eval DIR")
    return {"pairs": [compare_pair(p) for p in pairs]}
