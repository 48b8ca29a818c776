"""Base vs trained pass@k at every k, and where the curves cross.

Reads `agent-rl eval` output directories (report.json: per-task n and c, see
agent_rl.eval.reports) and recomputes the unbiased pass@k at every k from 1 to the smallest
per-task sample count, not only the powers of two the eval report tabulates, so a crossing
is located to the exact k.

Which directories are base and trained: `agent-rl pipeline` names its evals
`eval-<stage>-<split>` (stages base, sft, rl), so each split pairs eval-base-<split> with its
latest trained stage (rl, else sft). Any other layout is paired explicitly (the CLI's
--base-eval / --trained-eval).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from agent_rl.eval.passk import aggregate_pass_at_k
from agent_rl.eval.reports import REPORT_JSON, load_eval_report

_PIPELINE_EVAL = re.compile(r"^eval-(?P<stage>base|sft|rl)-(?P<split>.+)$")
TRAINED_STAGES = ("rl", "sft")  # preferred first


def every_k_curve(report: Mapping[str, object]) -> dict[int, float]:
    """pass@k for k = 1 .. min n over the report's tasks."""
    per_task = report.get("per_task") or {}
    if not isinstance(per_task, Mapping) or not per_task:
        raise ValueError("the eval report has no per_task counts")
    counts = {task: (int(t["n"]), int(t["c"])) for task, t in per_task.items()}
    min_n = min(n for n, _ in counts.values())
    return aggregate_pass_at_k(counts, range(1, min_n + 1))


def crossing_k(base: Mapping[int, float], trained: Mapping[int, float], tol: float = 1e-12) -> int | None:
    """The first shared k where trained − base has the opposite sign to its sign at the
    smallest shared k (ties at the start take the first nonzero sign); None if it never does."""
    ks = sorted(set(base) & set(trained))
    first_sign = 0
    for k in ks:
        diff = trained[k] - base[k]
        sign = 0 if abs(diff) <= tol else (1 if diff > 0 else -1)
        if first_sign == 0:
            first_sign = sign
        elif sign == -first_sign or sign == 0:
            return k
    return None


@dataclass(frozen=True)
class EvalPair:
    name: str  # the split, or "explicit"
    base_dir: Path
    trained_dir: Path


def pipeline_pairs(run_dir: Path) -> list[EvalPair]:
    """eval-base-<split> with eval-rl-<split> (else eval-sft-<split>), under `run_dir`."""
    found: dict[str, dict[str, Path]] = {}
    if run_dir.is_dir():
        for child in sorted(run_dir.iterdir()):
            match = _PIPELINE_EVAL.match(child.name)
            if match and (child / REPORT_JSON).is_file():
                found.setdefault(match.group("split"), {})[match.group("stage")] = child
    pairs = []
    for split, stages in sorted(found.items()):
        trained = next((stages[s] for s in TRAINED_STAGES if s in stages), None)
        if "base" in stages and trained is not None:
            pairs.append(EvalPair(split, stages["base"], trained))
    return pairs


def compare_pair(pair: EvalPair) -> dict[str, object]:
    """The curves at every k, their difference and the crossing k of one pair."""
    base = every_k_curve(load_eval_report(str(pair.base_dir)))
    trained = every_k_curve(load_eval_report(str(pair.trained_dir)))
    ks = sorted(set(base) & set(trained))
    cross = crossing_k(base, trained)
    return {
        "name": pair.name,
        "base_dir": str(pair.base_dir),
        "trained_dir": str(pair.trained_dir),
        "ks": ks,
        "base": {str(k): base[k] for k in ks},
        "trained": {str(k): trained[k] for k in ks},
        "trained_minus_base": {str(k): trained[k] - base[k] for k in ks},
        "crossing_k": cross,
    }
