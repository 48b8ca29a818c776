"""`env.reward: fraction` pays progress on the bug (FAIL_TO_PASS only), never idleness:
pure checks of `GradeReport.reward`, then a built-in task graded for real."""
from __future__ import annotations

import re

import pytest

from envs.grading import GradeReport, grade
from envs.suites import load_suite

F2P = ["t.py::f1", "t.py::f2", "t.py::f3", "t.py::f4"]
P2P = ["t.py::p1", "t.py::p2"]


def report(f2p_pass: int, p2p_fail: int = 0) -> GradeReport:
    r = GradeReport(instance_id="x")
    r.tests_status["FAIL_TO_PASS"] = {"success": F2P[:f2p_pass], "failure": F2P[f2p_pass:]}
    r.tests_status["PASS_TO_PASS"] = {"success": P2P[p2p_fail:], "failure": P2P[:p2p_fail]}
    r.resolved = f2p_pass == len(F2P) and not p2p_fail
    return r


def test_fraction_counts_fail_to_pass_only():
    assert report(0).reward("fraction") == 0.0  # the empty patch: every P2P passes, no credit
    assert report(1).reward("fraction") == pytest.approx(0.25)
    assert report(3).reward("fraction") == pytest.approx(0.75)
    assert report(4).reward("fraction") == 1.0


def test_any_broken_pass_to_pass_test_forfeits_partial_credit():
    assert report(3, p2p_fail=1).reward("fraction") == 0.0
    assert report(4, p2p_fail=2).reward("fraction") == 0.0


def test_binary_is_all_or_nothing_and_unknown_kinds_are_refused():
    assert [report(n).reward() for n in range(5)] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert report(4, p2p_fail=1).reward("binary") == 0.0
    with pytest.raises(ValueError, match="unknown reward kind 'dense'"):
        report(4).reward("dense")


def test_no_fail_to_pass_tests_means_no_partial_credit():
    r = GradeReport(instance_id="x")
    r.tests_status["PASS_TO_PASS"]["success"] = list(P2P)
    assert r.reward("fraction") == 0.0


def _per_file(patch: str) -> list[str]:
    return [p for p in re.split(r"(?m)^(?=diff --git )", patch) if p.strip()]


@pytest.mark.docker
def test_builtin_task_empty_gold_and_half_patch():
    """semvertools-010: 4 FAIL_TO_PASS tests, a gold patch over two files; fixing one file
    fixes some of the target tests but not all."""
    task = next(t for t in load_suite("semvertools") if t.instance_id == "semvertools-010")
    halves = _per_file(task.patch)
    assert len(task.FAIL_TO_PASS) >= 2 and len(halves) == 2
    empty, gold, half = (grade(task, p) for p in ("", task.patch, halves[1]))
    assert (empty.reward("binary"), empty.reward("fraction")) == (0.0, 0.0)
    assert empty.fraction_passed > 0.9  # what the old fraction reward paid for doing nothing
    assert (gold.reward("binary"), gold.reward("fraction")) == (1.0, 1.0)
    f2p = half.tests_status["FAIL_TO_PASS"]
    assert f2p["success"] and f2p["failure"] and not half.tests_status["PASS_TO_PASS"]["failure"], half.to_dict()
    assert half.reward("binary") == 0.0
    assert half.reward("fraction") == pytest.approx(len(f2p["success"]) / len(task.FAIL_TO_PASS))
