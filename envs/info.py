"""The `info` dicts `SWEEnv.reset` and `SWEEnv.step`/`finish` return, as TypedDicts.

Gymnasium leaves `info` free-form; these spell out which keys a caller can rely on.
"""
from __future__ import annotations

from typing import Any, TypedDict


class ResetInfo(TypedDict):
    """`reset`'s info: the task and the episode's limits (the agent's prompt quotes them)."""

    task_id: str
    max_turns: int
    max_time_s: float
    max_observation_chars: int
    observation_budget: int
    action_format: str  # "fenced" | "json"


class _StepInfoRequired(TypedDict):
    turn: int  # 1-based count of steps taken, this one included


class StepInfo(_StepInfoRequired, total=False):
    """`step`'s info. Every step has `turn` (and `action`, except from `finish`); the terminal
    step adds the end-of-episode keys, among them the grade."""

    action: str  # the parsed action's class: Bash, View, Create, StrReplace, Submit, FormatError
    format_error: bool  # the text held no well-formed action; the observation says why
    sandbox_error: str  # the workspace died (OOM, killed): the episode ends here
    # ---- end of episode only (terminated or truncated)
    task_id: str
    end_reason: str  # submitted | max_turns | max_time | observation_budget | sandbox_died | finish's reason
    grade: dict[str, Any]  # envs.grading.GradeReport.to_dict(): SWE-bench keys, fraction_passed, timings
    patch: str  # the agent's diff against the base commit, as graded
    patch_error: str  # why the diff could not be taken (an empty patch was graded)
    turns: int
    elapsed_s: float  # wall time since reset


__all__ = ["ResetInfo", "StepInfo"]
