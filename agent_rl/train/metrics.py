"""Per-step training metrics: metrics.jsonl (the source of truth), TensorBoard, optional W&B,
and `training_curves.png` at the end of a run.

On resume the logger is handed the checkpoint's metrics history and rewrites metrics.jsonl
from it, so steps logged after the last checkpoint by a killed run do not appear twice.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

# Every step logs at least these keys (the trainer test checks them).
STEP_METRICS: tuple[str, ...] = (
    "step",
    "reward_mean",
    "solve_rate",
    "zero_variance_group_fraction",
    "generation_rounds",
    "response_tokens_mean",
    "turns_mean",
    "truncation_rate",
    "entropy",
    "planning_entropy",
    "execution_entropy",
    "planning_logprob",
    "execution_logprob",
    "clip_fraction_low",
    "clip_fraction_high",
    "approx_kl_old",
    "kl_ref",
    "is_mismatch_mean_abs_logprob_diff",
    "is_max_ratio",
    "grad_norm",
    "learning_rate",
    "sandbox_latency_s",
    "grading_latency_s",
    "tokens_per_s",
    "step_time_s",
    "cpu_time_s",
    "devices",
)

# (metric, panel title) for training_curves.png.
CURVES: tuple[tuple[str, str], ...] = (
    ("reward_mean", "reward (mean)"),
    ("solve_rate", "solve rate"),
    ("entropy", "entropy on sampled tokens"),
    ("response_tokens_mean", "response length (tokens)"),
)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children so far."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def devices_held(device: Any, world_size: int) -> int:
    """Devices the run computes on: one GPU per rank, or each rank's CPU threads."""
    if str(device).startswith("cuda"):
        return world_size
    import torch

    return world_size * torch.get_num_threads()


def step_metrics(trajectories: Sequence[Any], sampling: Any, batch: Any, update: Mapping[str, Any], sync: Any,
                 *, rollout_s: float, policy_version: int) -> dict[str, Any]:
    """One training step's row: rollout outcomes, timings, the update's numbers, the weight sync.

    Keys an update did not produce (a step with nothing to train on) are logged as None, so
    every row has every `STEP_METRICS` key.
    """
    ok = [t for t in trajectories if t.error is None]
    # A harness episode split into segments (gateway sessions) counts once in the outcomes.
    episodes = [t for t in ok if t.segment == 0]
    sampled_tokens = sum(t.num_sampled_tokens for t in ok)
    metrics: dict[str, Any] = {
        "reward_mean": mean([t.reward for t in episodes]),
        "solve_rate": mean([1.0 if t.resolved else 0.0 for t in episodes]),
        "history_splits": sum(1 for t in ok if t.segment > 0),
        "zero_variance_group_fraction": sampling.zero_variance_fraction,
        "generation_rounds": sampling.rounds,
        "groups_kept": len(sampling.kept),
        "batch_full": sampling.full,
        "trajectories": len(trajectories),
        "error_trajectories": len(trajectories) - len(ok),
        "response_tokens_mean": mean([t.num_sampled_tokens for t in ok]),
        "turns_mean": mean([t.num_turns for t in ok]),
        "truncation_rate": mean([1.0 if t.truncated else 0.0 for t in ok]),
        "shaped_reward_mean": mean(batch.shaped_rewards),
        "entropy": None,
        # Per-phase means over sampled tokens: planning = reasoning outside the action, execution =
        # the action block / tool call (agent_rl.analysis.phases); None for a phase with no tokens.
        "planning_entropy": None,
        "execution_entropy": None,
        "planning_logprob": None,
        "execution_logprob": None,
        "clip_fraction_low": None,
        "clip_fraction_high": None,
        "approx_kl_old": None,
        "kl_ref": None,
        "is_mismatch_mean_abs_logprob_diff": None,
        "is_max_ratio": None,
        "grad_norm": None,
        "sandbox_latency_s": mean([t.timings.get("env_s", 0.0) for t in ok]),
        "grading_latency_s": mean([t.timings.get("grading_s", 0.0) for t in ok]),
        "generation_latency_s": mean([t.timings.get("generation_s", 0.0) for t in ok]),
        "rollout_s": rollout_s,
        "tokens_per_s": sampled_tokens / rollout_s if rollout_s > 0 else None,
        "weight_sync_s": sync.seconds,
        "weight_sync_max_abs_diff": sync.max_abs_diff,
        "weight_sync_verified": sync.verified,
        "policy_version": policy_version,
    }
    metrics.update(update)
    return metrics


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if hasattr(value, "item"):
        return _jsonable(value.item())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class MetricsLogger:
    """Writes one JSON line per step to `<out_dir>/metrics.jsonl`, plus TensorBoard / W&B scalars."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "agent-rl",
        run_config: Mapping[str, Any] | None = None,
        history: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        self.history: list[dict[str, Any]] = [dict(h) for h in history]
        with self.path.open("w", encoding="utf-8") as fh:
            for row in self.history:
                fh.write(json.dumps(row) + "\n")
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
        self._wandb = None
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError as exc:
                raise RuntimeError("logging.wandb is true but wandb is not installed: pip install wandb") from exc
            self._wandb = wandb_lib.init(project=wandb_project, config=dict(run_config or {}), dir=str(self.out_dir))

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        row = _jsonable({"step": step, **metrics})
        self.history.append(row)
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        return row

    def event(self, step: int, kind: str, **details: Any) -> None:
        """One-off events (reference resets, sync failures): logged to events.jsonl and the log."""
        log.info("step %d: %s %s", step, kind, details)
        with (self.out_dir / "events.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(_jsonable({"step": step, "event": kind, **details})) + "\n")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plot_training_curves(history: list[Mapping[str, Any]], path: str | Path,
                         curves: Sequence[tuple[str, str]] = CURVES) -> Path:
    """Four metrics against step, one panel each: by default reward, solve rate, entropy and
    response length (`curves` names others, e.g. SFT's loss)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on training machines
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    for ax, (key, title) in zip(axes.flat, curves):
        points = [(row["step"], row[key]) for row in history if isinstance(row.get(key), (int, float))]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 30 else None)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
