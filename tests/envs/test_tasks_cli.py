"""`agent-rl tasks list|show|validate` and the validation verdicts."""
from __future__ import annotations

import json

import pytest
from tinytask import F2P, P2P, make_tiny_task

from agent_rl.cli import main
from envs.grading import GradeReport
from envs.validate import judge


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_tiny_task(tmp_path_factory.mktemp("cli"))


@pytest.fixture
def tasks_file(task, tmp_path):
    broken = {**task.to_dict(), "instance_id": "tiny__broken-gold", "patch": ""}
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(task.to_dict()) + "\n" + json.dumps(broken) + "\n")
    return str(path)


def test_list_prints_a_table(tasks_file, capsys):
    assert main(["tasks", "list", "--tasks", tasks_file]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "SUITE", "DIFFICULTY", "#F2P", "#P2P"]
    assert lines[1].split() == ["tiny__calc-1", "tiny", "easy", "1", "2"]
    assert lines[-1] == "2 tasks"


def test_list_json_is_the_public_view(tasks_file, capsys):
    assert main(["tasks", "list", "--tasks", tasks_file, "--json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["instance_id"] == "tiny__calc-1" and "patch" not in first and "test_patch" not in first


def test_show_hides_the_gold_patch_unless_asked(task, tasks_file, capsys):
    assert main(["tasks", "show", "tiny__calc-1", "--tasks", tasks_file]) == 0
    out = capsys.readouterr().out
    assert task.problem_statement in out and F2P[0] in out and P2P[1] in out
    assert "return a + b" not in out and "hidden-test-7f3a9c" not in out
    assert main(["tasks", "show", "tiny__calc-1", "--tasks", tasks_file, "--gold"]) == 0
    out = capsys.readouterr().out
    assert "+    return a + b" in out and "hidden-test-7f3a9c" in out


def test_bad_sources_exit_2_with_a_message(tmp_path, capsys):
    assert main(["tasks", "show", "nope", "--tasks", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read task file" in capsys.readouterr().err
    assert main(["tasks", "list", "--suite", "no-such-suite"]) == 2
    assert "unknown builtin suite" in capsys.readouterr().err


def _report(f2p_ok: bool, p2p_ok: bool = True, error: str = "") -> GradeReport:
    report = GradeReport(instance_id="t")
    report.tests_status["FAIL_TO_PASS"]["success" if f2p_ok else "failure"].append("t::f")
    report.tests_status["PASS_TO_PASS"]["success" if p2p_ok else "failure"].append("t::p")
    report.resolved = f2p_ok and p2p_ok
    report.error = error
    return report


def test_judge_verdicts(task):
    good = judge(task, [_report(True)] * 2, [_report(False)] * 2)
    assert good.valid and not good.flaky
    flaky = judge(task, [_report(True), _report(False)], [_report(False)] * 2)
    assert flaky.flaky and not flaky.valid and flaky.flaky_tests == ["t::f (gold)"]
    trivial = judge(task, [_report(True)], [_report(True)])
    assert "the empty patch resolves the task" in trivial.problems
    assert any("pass without a fix" in p for p in trivial.problems)
    broken_base = judge(task, [_report(True)], [_report(False, p2p_ok=False)])
    assert any("fail at the base commit" in p for p in broken_base.problems)
    infra = judge(task, [_report(True, error="docker went away")], [_report(False)])
    assert any("docker went away" in p for p in infra.problems)


@pytest.mark.docker
def test_validate_writes_json_and_fails_on_an_invalid_task(tasks_file, tmp_path, capsys):
    out_dir = tmp_path / "val"
    # One run per patch keeps this quick; flakiness across runs is covered by test_judge_verdicts.
    code = main(["tasks", "validate", "--tasks", tasks_file, "--runs", "1", "--workers", "2", "--out", str(out_dir)])
    assert code == 1, capsys.readouterr().out
    data = json.loads((out_dir / "validation.json").read_text())
    by_id = {t["instance_id"]: t for t in data["tasks"]}
    assert by_id["tiny__calc-1"]["valid"] and by_id["tiny__calc-1"]["gold_resolved"] == [True]
    assert by_id["tiny__calc-1"]["empty_resolved"] == [False]
    broken = by_id["tiny__broken-gold"]
    assert not broken["valid"] and any("gold patch does not resolve" in p for p in broken["problems"])
    assert data["summary"]["invalid"] == ["tiny__broken-gold"] and data["summary"]["flaky"] == []
    assert "1/2 valid" in capsys.readouterr().out
