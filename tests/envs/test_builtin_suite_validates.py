"""The acceptance bar of the built-in benchmark, checked in CI on every change: every task's
gold patch resolves it and the empty patch does not, three gradings out of three, each in a
fresh container through the real grader. (~8 min on 2 idle cores.)"""
from __future__ import annotations

import pytest

from envs.suites import load_suite
from envs.validate import validate_tasks


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_every_builtin_task_validates_three_runs_out_of_three():
    tasks = load_suite()
    assert len(tasks) >= 60
    results = validate_tasks(tasks, runs=3, workers=3)
    invalid = {r.instance_id: r.problems + r.flaky_tests for r in results if not r.valid}
    assert not invalid, f"{len(invalid)} builtin task(s) do not validate: {invalid}"
    assert all(r.gold_resolved == [True] * 3 and r.empty_resolved == [False] * 3 for r in results)
