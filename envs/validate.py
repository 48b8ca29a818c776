"""Is a task well-posed? The gold patch must resolve it and the empty patch must not.

Each task is graded `runs` times with each patch in fresh containers (the real grader, so
validation also exercises every grading defence). A task is *valid* when every gold run
resolves, no empty run does, each FAIL_TO_PASS test fails and each PASS_TO_PASS test passes
at the base commit, and no run hit an infrastructure error. A task whose per-test outcomes
differ between identical runs is *flaky* (and invalid: its reward would be noise).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from envs.grading import GradeReport, GradingConfig, grade
from envs.tasks import Task

Progress = Callable[[str], None]


@dataclass
class TaskValidation:
    instance_id: str
    gold_resolved: list[bool] = field(default_factory=list)
    empty_resolved: list[bool] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    flaky_tests: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def flaky(self) -> bool:
        return bool(self.flaky_tests)

    @property
    def valid(self) -> bool:
        return not self.problems and not self.flaky

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "valid": self.valid, "flaky": self.flaky}


def _outcomes(report: GradeReport) -> dict[str, bool]:
    return {
        test: kind == "success"
        for lists in report.tests_status.values()
        for kind, tests in lists.items()
        for test in tests
    }


def judge(task: Task, gold: list[GradeReport], empty: list[GradeReport]) -> TaskValidation:
    """Pure: the verdict on one task from its gold and empty grade reports."""
    result = TaskValidation(task.instance_id)
    result.gold_resolved = [r.resolved for r in gold]
    result.empty_resolved = [r.resolved for r in empty]
    if not task.FAIL_TO_PASS:
        result.problems.append("no FAIL_TO_PASS tests")
    for label, reports in (("gold", gold), ("empty", empty)):
        for report in reports:
            if report.error and not (label == "empty" and "did not run" in report.error):
                result.problems.append(f"{label} run error: {report.error}")
            if report.tamper:
                result.problems.append(f"{label} run flagged: {'; '.join(report.tamper)}")
        runs = [_outcomes(r) for r in reports]
        for test in sorted(set().union(*runs)) if runs else []:
            if len({run.get(test) for run in runs}) > 1:
                result.flaky_tests.append(f"{test} ({label})")
    if gold and not all(result.gold_resolved):
        failing = sorted({t for r in gold for lists in r.tests_status.values() for t in lists["failure"]})
        result.problems.append(f"gold patch does not resolve: failing {', '.join(failing) or 'n/a'}")
    if any(result.empty_resolved):
        result.problems.append("the empty patch resolves the task")
    for report in empty[:1]:
        early = report.tests_status["FAIL_TO_PASS"]["success"]
        if early:
            result.problems.append(f"FAIL_TO_PASS tests pass without a fix: {', '.join(early)}")
        broken = report.tests_status["PASS_TO_PASS"]["failure"]
        if broken:
            result.problems.append(f"PASS_TO_PASS tests fail at the base commit: {', '.join(broken)}")
    result.problems = list(dict.fromkeys(result.problems))
    return result


def validate_tasks(
    tasks: Iterable[Task],
    *,
    runs: int = 3,
    workers: int = 2,
    grading: GradingConfig | Mapping[str, Any] | None = None,
    progress: Progress = lambda _msg: None,
) -> list[TaskValidation]:
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    config = GradingConfig.from_config(grading)
    tasks = list(tasks)

    def one(task: Task) -> TaskValidation:
        started = time.monotonic()
        try:
            from envs.task_images import task_image

            image = task_image(task)
            gold = [grade(task, task.patch, config=config, image=image) for _ in range(runs)]
            empty = [grade(task, "", config=config, image=image) for _ in range(runs)]
            result = judge(task, gold, empty)
        except Exception as exc:  # one broken task must not stop the others
            result = TaskValidation(task.instance_id, problems=[f"{type(exc).__name__}: {exc}"])
        result.seconds = round(time.monotonic() - started, 2)
        progress(f"{task.instance_id}: {'valid' if result.valid else 'INVALID'}" + (
            "" if result.valid else f" ({'; '.join(result.problems + result.flaky_tests)})"))
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, tasks))


def write_validation(results: list[TaskValidation], out_dir: str | Path, *, runs: int) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "tasks": len(results),
        "valid": sum(r.valid for r in results),
        "invalid": [r.instance_id for r in results if not r.valid],
        "flaky": [r.instance_id for r in results if r.flaky],
        "runs": runs,
    }
    path = out / "validation.json"
    path.write_text(json.dumps({"summary": summary, "tasks": [r.to_dict() for r in results]}, indent=2) + "\n")
    return path
