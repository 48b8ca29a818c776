"""The one pytest protocol: command line, JUnit outcomes, list selection, and what grading and
refresh make of skipped, xfailed and xpassed tests (real pytest, real git, real Docker)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from mixed_outcomes import EXPECTED, EXPECTED_BROKEN, BROKEN_TESTS, NEUTRAL, SOURCE, TESTS, make_repo

from envs.pytest_protocol import (
    ENV,
    NotPytestError,
    Outcome,
    describe,
    junit_key,
    parse_junit,
    python_of,
    run_local,
    shell_command,
    split_lists,
)
from envs.tasks import Task


def test_junit_keys_and_parsing():
    assert junit_key("tests/test_a.py::test_x") == ("tests.test_a", "test_x")
    assert junit_key("tests/test_a.py::TestK::test_y[1-a::b]") == ("tests.test_a.TestK", "test_y[1-a::b]")
    xml = """<testsuites><testsuite>
      <testcase classname="tests.test_a" name="test_ok"/>
      <testcase classname="tests.test_a" name="test_fail"><failure message="x"/></testcase>
      <testcase classname="tests.test_a" name="test_skip"><skipped message="x"/></testcase>
      <testcase classname="tests.test_a" name="test_teardown"/>
      <testcase classname="tests.test_a" name="test_teardown"><error message="teardown"/></testcase>
    </testsuite></testsuites>"""
    status = parse_junit(xml).cases
    assert status[("tests.test_a", "test_ok")].outcome.passes_grading is True
    assert not any(status[("tests.test_a", n)].outcome.passes_grading for n in ("test_fail", "test_skip", "test_teardown"))


def test_parse_junit_node_ids() -> None:
    xml = """<testsuites><testsuite>
      <testcase classname="tests.test_a" name="test_ok" file="tests/test_a.py"/>
      <testcase classname="tests.test_a.TestBox" name="test_x[1-2]" file="tests/test_a.py"><failure/></testcase>
      <testcase classname="tests.test_b" name="test_skip" file="tests/test_b.py"><skipped/></testcase>
      <testcase classname="" name="tests.test_c"><error message="collection failure"/></testcase>
    </testsuite></testsuites>"""
    report = parse_junit(xml)
    assert report.outcomes() == {
        "tests/test_a.py::test_ok": "passed",
        "tests/test_a.py::TestBox::test_x[1-2]": "failed",
        "tests/test_b.py::test_skip": "skipped",
    }
    assert report.collection_errors == ["tests.test_c"]


def test_launcher_labels_give_xpass_and_exact_node_ids() -> None:
    label = '<properties><property name="agent_rl.nodeid" value="tests/test_a.py::TestK::test_inherited"/></properties>'
    xml = f"""<testsuites><testsuite>
      <testcase classname="tests.test_a" name="test_xp" file="tests/test_a.py">
        <properties><property name="agent_rl.outcome" value="xpassed"/></properties></testcase>
      <testcase classname="tests.test_a" name="test_xf" file="tests/test_a.py"><skipped type="pytest.xfail" message="why"/></testcase>
      <testcase classname="tests.test_a.TestK" name="test_inherited" file="tests/base.py">{label}</testcase>
      <testcase classname="tests.test_a" name="test_td" file="tests/test_a.py"><failure message="first"/></testcase>
      <testcase classname="tests.test_a" name="test_td" file="tests/test_a.py"><error message="second"/></testcase>
    </testsuite></testsuites>"""
    report = parse_junit(xml)
    assert report.outcomes() == {
        "tests/test_a.py::test_xp": Outcome.XPASSED,
        "tests/test_a.py::test_xf": Outcome.XFAILED,
        "tests/test_a.py::TestK::test_inherited": Outcome.PASSED,  # the file attribute says tests/base.py
        "tests/test_a.py::test_td": Outcome.ERROR,  # the worst of its entries; the first message
    }
    assert report.messages() == {"tests/test_a.py::test_xf": "why", "tests/test_a.py::test_td": "first"}


def test_outcome_classes_and_selection() -> None:
    assert [o.value for o in Outcome if o.is_failure] == ["failed", "error"]
    assert [o.value for o in Outcome if o.is_neutral] == ["skipped", "xfailed", "xpassed"]
    assert [o.value for o in Outcome if o.passes_grading] == ["passed", "xpassed"]
    P, F, E, S, XF, XP = (Outcome.PASSED, Outcome.FAILED, Outcome.ERROR, Outcome.SKIPPED, Outcome.XFAILED,
                          Outcome.XPASSED)
    fixed = {"a": P, "b": P, "c": P, "d": P, "e": P, "f": S, "g": XF, "h": XP, "i": F}
    buggy = {"a": F, "b": E, "c": P, "d": S, "f": F, "g": F, "h": F, "i": F}  # e: its module broke
    assert split_lists(buggy, fixed) == (["a", "b", "e"], ["c"])
    assert describe([P, P, S, XF]) == "2 passed, 1 skipped, 1 xfailed"


def test_one_command_line() -> None:
    command = shell_command("python3", "/s/launcher.py", None, "/testbed", "/s/j.xml", ["tests/test_a.py"])
    argv = shlex.split(command)
    assert argv[0] == "env" and all(f"{k}={v}" in argv for k, v in ENV.items())
    assert "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1" in argv and "PYTEST_ADDOPTS=" in argv
    assert "python3 -I /s/launcher.py - /testbed --" in command
    for flag in ("-p no:cacheprovider", "-o addopts=", "-c /dev/null", "--rootdir /testbed", "--confcutdir /testbed",
                 "--junitxml=/s/j.xml", "-o junit_family=xunit1"):
        assert flag in command
    assert command.endswith("tests/test_a.py")
    assert python_of("python3 -m pytest") == python_of("pytest") == "python3"
    assert python_of("/opt/py/bin/python -m pytest") == "/opt/py/bin/python"
    for bad in ("make test", "", "pytest -x", "env A=1 pytest"):
        with pytest.raises(NotPytestError, match="is not pytest"):
            python_of(bad)


def test_real_run_gives_every_outcome(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path / "mixkit", {"tests/test_broken.py": BROKEN_TESTS})
    run = run_local(repo, python=sys.executable, timeout=120)
    assert run.junit is not None, run.output
    assert run.junit.outcomes() == {**EXPECTED, **EXPECTED_BROKEN}, run.output
    messages = run.junit.messages()
    assert messages["tests/test_ops.py::TestNetwork::test_online"] == "set MIXKIT_ONLINE to run network tests"
    assert "means are off" in messages["tests/test_broken.py::test_fails"]
    assert run.junit.collection_errors == [] and run.exit_code == 1

    (repo / "tests" / "test_import.py").write_text("import mixkit.no_such_module\n")
    broken = run_local(repo, python=sys.executable, timeout=120)
    assert broken.junit is not None and broken.junit.collection_errors == ["tests/test_import.py"]


@pytest.mark.docker
def test_grader_never_passes_a_skipped_or_xfailed_target(tmp_path: Path, docker_engine: None) -> None:
    from envs.grading import grade

    repo, commit = make_repo(tmp_path / "mixkit")
    targets = sorted(EXPECTED)
    task = Task(instance_id="mixkit__grade-1", repo=str(repo), base_commit=commit, problem_statement="-",
                PASS_TO_PASS=targets, test_timeout_s=120.0)
    report = grade(task, "")
    assert report.error == "" and report.tamper == [], report.test_output
    assert sorted(report.tests_status["PASS_TO_PASS"]["success"]) == sorted(
        t for t, o in EXPECTED.items() if o.passes_grading)
    assert sorted(report.tests_status["PASS_TO_PASS"]["failure"]) == sorted(
        t for t, o in EXPECTED.items() if o in (Outcome.SKIPPED, Outcome.XFAILED))
    assert not report.resolved


MIX_TASK = """\
  - id: mixkit-001
    difficulty: easy
    problem_statement: |
      mean() of two integers loses the fraction.
    bug:
      - file: mixkit/ops.py
        old: "sum(values) / len(values)"
        new: "sum(values) // len(values)"
    hidden_tests:
      - file: tests/test_issue_mixkit_001.py
        content: |
          import pytest
          from mixkit.ops import mean
          def test_mean_fraction():
              assert mean([1, 2]) == 1.5
          @pytest.mark.skip(reason="later")
          def test_mean_later():
              assert mean([1]) == 1
          @pytest.mark.xfail(reason="strings are not supported")
          def test_mean_strings():
              assert mean(["a"]) == "a"
"""


def test_refresh_ignores_skipped_and_xfail_marked_tests(tmp_path: Path) -> None:
    from envs.suites import build_task
    from envs.suites.refresh import check_task
    from envs.suites.spec import parse_suite, read_tree

    suite_dir = tmp_path / "mixkit"
    (suite_dir / "repo" / "mixkit").mkdir(parents=True)
    (suite_dir / "repo" / "tests").mkdir()
    (suite_dir / "repo" / "mixkit" / "__init__.py").write_text("")
    (suite_dir / "repo" / "mixkit" / "ops.py").write_text(SOURCE)
    (suite_dir / "repo" / "tests" / "test_ops.py").write_text(TESTS)
    (suite_dir / "tasks.yaml").write_text("suite: mixkit\ntasks:\n" + MIX_TASK)
    suite = parse_suite(suite_dir)
    task = build_task(suite, suite.tasks[0], read_tree(suite.repo_dir), tmp_path / "cache", lists_required=False)

    outcome = check_task(task)
    assert outcome.problems == ()
    hidden = "tests/test_issue_mixkit_001.py::"
    assert outcome.FAIL_TO_PASS == [f"{hidden}test_mean_fraction"]
    assert outcome.PASS_TO_PASS == sorted(t for t, o in EXPECTED.items() if o is Outcome.PASSED)
    chosen = set(outcome.FAIL_TO_PASS) | set(outcome.PASS_TO_PASS)
    assert not chosen & {*NEUTRAL, f"{hidden}test_mean_later", f"{hidden}test_mean_strings"}
