"""Native R2E-Gym rows without Docker: loading, malformed rows, R2E's log parser and reward
(parity with R2E-Gym's `parse_log_pytest` / `_calculate_reward_r2e`), the run-time checks,
patch screening, the image layers' shell, and the grading plumbing with a fake container."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from official_layout import r2e_parsed_commit

from envs.grading import grade
from envs.swebench import r2e
from envs.swebench.datasets import VENV_ACTIVATE
from envs.tasks import TaskError, load_tasks
from sandboxes.base import ExecResult

FIX = "a" * 40
HIDDEN_SOURCE = "def test_add_positive():\n    assert add(2, 3) == 5  # r2e-hidden-0c1e\n"

GOLD_DIFF = (
    "diff --git a/calc/ops.py b/calc/ops.py\nindex 1111111..2222222 100644\n--- a/calc/ops.py\n+++ b/calc/ops.py\n"
    "@@ -1,2 +1,2 @@ def add(a, b):\n def add(a, b):\n-    return a - b\n+    return a + b\n"
    "diff --git a/tests/test_ops.py b/tests/test_ops.py\nindex 3333333..4444444 100644\n--- a/tests/test_ops.py\n"
    "+++ b/tests/test_ops.py\n@@ -1 +1,2 @@\n import calc\n+HIDDEN = 1\n"
    "diff --git a/CHANGES.md b/CHANGES.md\nindex 5555555..6666666 100644\n--- a/CHANGES.md\n+++ b/CHANGES.md\n"
    "@@ -1 +1,2 @@\n # changes\n+- add adds\n"
    "diff --git a/calc/util.py b/calc/util.py\nnew file mode 100644\nindex 0000000..7777777\n--- /dev/null\n"
    "+++ b/calc/util.py\n@@ -0,0 +1 @@\n+X = 1\n\\ No newline at end of file\n"
)
GOLD_EXPECTED = (
    "diff --git a/calc/ops.py b/calc/ops.py\nindex 1111111..2222222 100644\n--- a/calc/ops.py\n+++ b/calc/ops.py\n"
    "@@ -1,2 +1,2 @@ def add(a, b):\n def add(a, b):\n-    return a - b\n+    return a + b\n"
    "diff --git a/calc/util.py b/calc/util.py\nnew file mode 100644\nindex 0000000..7777777\n--- /dev/null\n"
    "+++ b/calc/util.py\n@@ -0,0 +1 @@\n+X = 1\n\\ No newline at end of file\n"
)


def pytest_log(lines: list[str], *, closing: str = "1 failed, 3 passed in 0.05s") -> str:
    """A `pytest -rA` run's tail as R2E's run script prints it (colour on, as a tty would)."""
    return (
        "============================= test session starts ==============================\n"
        "collected 4 items\n\nr2e_tests/test_1.py .F..                                             [100%]\n\n"
        "=================================== FAILURES ===================================\n"
        "______________________________ test_add_positive _______________________________\n"
        "E       assert -1 == 5\n"
        "==================================== PASSES ====================================\n"
        "=========================== \x1b[1mshort test summary info\x1b[0m ============================\n"
        + "".join(line + "\r\n" for line in lines)
        + f"========================= {closing} =========================\n"
    )


BEFORE = pytest_log([
    "PASSED r2e_tests/test_1.py::TestSub::test_sub", "PASSED r2e_tests/test_1.py::test_add_zero",
    "FAILED r2e_tests/test_1.py::test_add_positive - assert -1 == 5",
    "FAILED r2e_tests/test_1.py::test_known_bad - assert 0 == 1",
], closing="2 failed, 2 passed in 0.05s")
EXPECTED = {"TestSub.test_sub": "PASSED", "test_add_positive": "PASSED", "test_add_zero": "PASSED",
            "test_known_bad": "FAILED"}
AFTER_GOLD = pytest_log([
    "PASSED r2e_tests/test_1.py::TestSub::test_sub", "PASSED r2e_tests/test_1.py::test_add_positive",
    "PASSED r2e_tests/test_1.py::test_add_zero", "FAILED r2e_tests/test_1.py::test_known_bad - assert 0 == 1",
])


def native_row(**changes: object) -> dict:
    row = {
        "repo_name": "pandas", "docker_image": f"namanjain12/pandas_final:{FIX}", "commit_hash": FIX,
        "problem_statement": "[ISSUE]\nadd subtracts\n[/ISSUE]",
        "parsed_commit_content": json.dumps(r2e_parsed_commit(GOLD_DIFF, old=f"{FIX}^", new=FIX), indent=4),
        "execution_result_content": json.dumps({
            "repo_name": "pandas", "new_commit_hash": FIX, "test_file_codes": [HIDDEN_SOURCE],
            "test_file_names": ["test_1.py"], "setup_res_code": 0, "setup_res_stdout": "", "setup_res_stderr": "",
            "old_commit_res_code": 1, "old_commit_res_stdout": BEFORE, "new_commit_res_stdout": AFTER_GOLD,
        }),
        "expected_output_json": json.dumps(EXPECTED, indent=4),
        "modified_files": ["calc/ops.py", "tests/test_ops.py", "CHANGES.md", "calc/util.py"],
        "modified_entity_summaries": [{"name": "add"}], "relevant_files": ["calc/ops.py"],
        "num_non_test_files": 3, "num_non_test_func_methods": 1, "num_non_test_lines": 2,
        "prompt": "issue prompt built from the tests:\n" + HIDDEN_SOURCE,
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def test_native_rows_load_without_naming_a_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_RL_IMAGE_REGISTRY", "mirror.corp:5000/")
    (task,) = load_tasks(write_rows(tmp_path / "rows.jsonl", [native_row()]))
    assert task.instance_id == f"pandas-dev__pandas-{FIX}" and task.repo == "pandas-dev/pandas"
    assert task.image == f"mirror.corp:5000/namanjain12/pandas_final:{FIX}"
    assert (task.workdir, task.env_activate, task.base_commit) == ("/testbed", VENV_ACTIVATE, f"{FIX}^")
    assert task.problem_statement == "add subtracts"  # R2E's instruction: the [ISSUE] body
    assert task.patch == GOLD_EXPECTED and task.test_patch == ""  # R2E's gold: non-test .py files only
    # FAIL_TO_PASS: the statuses the fix changes; PASS_TO_PASS: those it keeps (even a failing one).
    assert task.FAIL_TO_PASS == ["test_add_positive"]
    assert task.PASS_TO_PASS == ["TestSub.test_sub", "test_add_zero", "test_known_bad"]
    meta = task.extra["r2e"]
    assert meta["expected"] == EXPECTED and meta["commit_hash"] == FIX and meta["test_files"] == ["test_1.py"]
    assert task.extra["dataset"] == "r2e-gym" and task.extra["image_source"] == "row field docker_image"
    assert r2e.is_native_task(task)
    # The hidden tests' source and logs (execution_result_content, prompt) are not kept anywhere.
    dumped = json.dumps(task.to_dict())
    assert "r2e-hidden-0c1e" not in dumped and "old_commit_res_stdout" not in dumped
    assert sorted(task.extra["dropped_fields"]) == sorted(r2e.DROPPED_FIELDS)


def test_hf_rows_and_profile_prefixes_load_too(tmp_path, monkeypatch):
    rows = [native_row(), native_row(commit_hash="b" * 40, docker_image=f"namanjain12/pandas_final:{'b' * 40}",
                                     instance_id="my-id", problem_statement="plain text")]
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, split: [dict(r) for r in rows]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    first, second = load_tasks("hf:R2E-Gym/R2E-Gym-Subset:train")
    assert first.instance_id == f"pandas-dev__pandas-{FIX}" and second.instance_id == "my-id"
    assert second.problem_statement == "plain text" and second.image.endswith("b" * 40)
    (again,) = load_tasks("r2e-gym:" + write_rows(tmp_path / "r.jsonl", rows[:1]))
    assert again.extra["r2e"]["expected"] == EXPECTED
    # Rows already in SWE-bench format still take the SWE-bench path under the r2e-gym profile.
    swe = {"instance_id": "x__y-1", "repo": "x/y", "base_commit": "c" * 40, "problem_statement": "p",
           "FAIL_TO_PASS": '["t.py::a"]', "docker_image": "r2e/img:1"}
    (plain,) = load_tasks("r2e-gym:" + write_rows(tmp_path / "s.jsonl", [swe]))
    assert not r2e.is_native_task(plain) and plain.image == "r2e/img:1"


def test_a_full_sha_base_and_a_missing_execution_result_are_fine(tmp_path):
    base = "c" * 40
    row = native_row(parsed_commit_content=json.dumps(r2e_parsed_commit(GOLD_DIFF, old=base, new=FIX)),
                     execution_result_content=None)
    (task,) = load_tasks(write_rows(tmp_path / "rows.jsonl", [row]))
    assert task.base_commit == base
    assert task.FAIL_TO_PASS == sorted(EXPECTED) and task.PASS_TO_PASS == []  # no "before": all of them


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"docker_image": None}, r"field docker_image is missing: r2e-gym rows name their image"),
        ({"repo_name": ""}, r"field repo_name is missing or empty"),
        ({"expected_output_json": "{not json"}, r"field expected_output_json is not valid JSON \(Expecting"),
        ({"expected_output_json": "[1, 2]"}, r"field expected_output_json must be a JSON object, got list"),
        ({"expected_output_json": "{}"}, r"field expected_output_json is empty: every run would match it"),
        ({"expected_output_json": '{"t": "OK"}'}, r"field expected_output_json maps 't' to 'OK'; statuses are PASSED"),
        ({"parsed_commit_content": "nope"}, r"field parsed_commit_content is not valid JSON"),
        ({"parsed_commit_content": '{"old_commit_hash": "x"}'}, r"field parsed_commit_content has no file_diffs list"),
        ({"parsed_commit_content": '{"file_diffs": [{"header": {}}], "new_commit_hash": "ab12cd3"}'},
         r"field parsed_commit_content is not an R2E-Gym parsed commit \(KeyError"),
        ({"commit_hash": "zz"}, r"field commit_hash must be the fix commit's hash, got 'zz'"),
        ({"problem_statement": "[ISSUE]  [/ISSUE]"}, r"field problem_statement is missing or empty"),
        ({"execution_result_content": "{"}, r"field execution_result_content is not valid JSON"),
        ({"instance_id": 7}, r"field instance_id must be a non-empty string, got 7"),
    ],
)
def test_malformed_rows_name_the_row_and_the_field(tmp_path, change, needle):
    path = write_rows(tmp_path / "rows.jsonl", [native_row(**change)])
    with pytest.raises(TaskError, match=r"R2E-Gym row '[^']+' \(from .*rows\.jsonl:1\): " + needle):
        load_tasks(path)


# --------------------------------------------------------------------------------------
# R2E's parser and reward
# --------------------------------------------------------------------------------------


def test_parser_reads_the_summary_as_r2e_does():
    log = r2e.clean_output(pytest_log([
        "PASSED r2e_tests/test_1.py::TestSub::test_sub", "PASSED r2e_tests/test_1.py::test_p[1-2]",
        "FAILED r2e_tests/test_1.py::test_add_positive - assert -1 == 5",
        "ERROR r2e_tests/test_2.py - ImportError: no module", "XFAIL r2e_tests/test_1.py::test_x - reason",
        "SKIPPED [1] r2e_tests/test_1.py:9: skip",
    ]))
    assert r2e.parse_log(log) == {"TestSub.test_sub": "PASSED", "test_p[1-2]": "PASSED",
                                  "test_add_positive": "FAILED", "": "ERROR"}
    assert r2e.parse_log("no summary here\nPASSED a::b") == {}
    # Two summaries: R2E reads only the text between the first and the second.
    twice = "short test summary info\nPASSED f::a\nshort test summary info\nFAILED f::a\n"
    assert r2e.parse_log(twice) == {"a": "PASSED"}
    # R2E's quirk: "PASSED" anywhere in a line wins, even in a failure's message.
    assert r2e.parse_log("short test summary info\nFAILED f::t - ValueError: PASSED\n") == {
        "t - ValueError: PASSED": "PASSED"}


def test_reward_is_r2e_equality_after_its_normalisation():
    assert r2e.reward(r2e.parse_log(r2e.clean_output(AFTER_GOLD)), EXPECTED) == 1.0
    assert r2e.reward(r2e.parse_log(r2e.clean_output(BEFORE)), EXPECTED) == 0.0
    assert r2e.reward({"\x1b[1mt - msg\x1b[0m": "FAILED"}, {"t": "FAILED"}) == 1.0  # colour and " - " cut
    assert r2e.reward({"a": "PASSED"}, {"a": "PASSED", "b": "PASSED"}) == 0.0  # a missing test
    assert r2e.reward({"a": "PASSED", "c": "PASSED"}, {"a": "PASSED", "b": "PASSED"}) == 0.0  # KeyError in R2E
    assert r2e.reward({"a": "PASSED", "b": "PASSED"}, {"a": "PASSED", "b": "FAILED"}) == 0.0  # must stay failing
    assert r2e.normalize({"t - x": "FAILED", "t": "PASSED"}) == {"t": "FAILED"}  # sorted order: later wins


def test_verdict_pays_r2e_reward_and_refuses_forged_logs():
    good = r2e.verdict(EXPECTED, AFTER_GOLD, 1)
    assert (good.reward, good.tamper, good.why) == (1.0, [], "") and sorted(good.matched) == sorted(EXPECTED)
    before = r2e.verdict(EXPECTED, BEFORE, 1)
    assert before.reward == 0.0 and before.mismatched == ["test_add_positive"] and not before.why
    # A summary printed by code under test before the real one: R2E reads the forged one (1.0).
    forged_summary = BEFORE.replace("==================================== PASSES",
                                    "short test summary info\n" + "\n".join(
                                        f"PASSED r2e_tests/test_1.py::{k.replace('.', '::')}" if v == "PASSED"
                                        else f"FAILED r2e_tests/test_1.py::{k}" for k, v in EXPECTED.items())
                                    + "\n==================================== PASSES")
    assert r2e.reward(r2e.parse_log(r2e.clean_output(forged_summary)), EXPECTED) == 1.0
    assert r2e.verdict(EXPECTED, forged_summary, 1).reward == 0.0
    assert "a forged summary" in r2e.verdict(EXPECTED, forged_summary, 1).tamper[0]
    # A line printed after the runner's closing line (atexit): R2E's last-line-wins gives 1.0.
    late = BEFORE + "PASSED r2e_tests/test_1.py::test_add_positive\n"
    assert r2e.reward(r2e.parse_log(r2e.clean_output(late)), EXPECTED) == 1.0
    assert r2e.verdict(EXPECTED, late, 1).reward == 0.0 and "after the runner's closing line" in r2e.verdict(EXPECTED, late, 1).tamper[0]
    # A failure whose message says PASSED.
    msg = BEFORE.replace("test_add_positive - assert -1 == 5", "test_add_positive - ValueError: PASSED")
    assert r2e.reward(r2e.parse_log(r2e.clean_output(msg)), EXPECTED) == 1.0
    assert r2e.verdict(EXPECTED, msg, 1).reward == 0.0 and "carries 'PASSED'" in r2e.verdict(EXPECTED, msg, 1).tamper[0]
    # Runs that do not count.
    assert r2e.verdict(EXPECTED, "", 1).why == "the test run wrote no output"
    assert "no test results" in r2e.verdict(EXPECTED, "ImportError\n", 2).why
    all_passed = {k: "PASSED" for k in EXPECTED}
    faked = pytest_log([f"PASSED r2e_tests/test_1.py::{k.replace('.', '::')}" for k in all_passed], closing="4 passed in 0.1s")
    assert r2e.verdict(all_passed, faked, 0).reward == 1.0
    assert "exited 1 yet its log shows no failing test" in r2e.verdict(all_passed, faked, 1).why


# --------------------------------------------------------------------------------------
# Screening, layers, commands
# --------------------------------------------------------------------------------------


def section(path: str, line: str = "x = 1") -> str:
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-old\n+{line}\n"


def test_screening_drops_r2e_hidden_paths_and_scans_for_forgery():
    patch = "".join(section(p) for p in (
        "calc/ops.py", "r2e_tests/__init__.py", "r2e_tests/helper.py", "run_tests.sh", "expected_test_output.json",
        ".venv/lib/python3.11/site-packages/calc_dep.py", "conftest.py",
    ))
    kept, dropped = r2e.screen_patch(patch)
    assert kept == section("calc/ops.py")
    assert dropped == sorted([".venv/lib/python3.11/site-packages/calc_dep.py", "conftest.py", "expected_test_output.json",
                              "r2e_tests/__init__.py", "r2e_tests/helper.py", "run_tests.sh"])
    findings = r2e.scan_patch(section("calc/ops.py", "print('short test summary' + ' info')"))
    assert any("summary header" in f for f in findings), findings
    assert any("hidden tests" in f for f in r2e.scan_patch(section("calc/ops.py", "open('/r2e_tests/test_1.py')")))
    assert r2e.scan_patch(section("calc/ops.py", "return a + b")) == []


def test_layer_scripts_are_valid_shell():
    from sandboxes.prebuilt_images import _adapt_script

    for script in (r2e.agent_layer_script(), r2e.grader_layer_script()):
        full = _adapt_script("/testbed") + script
        assert subprocess.run(["sh", "-n", "-c", full], capture_output=True).returncode == 0
        assert ">>> base commit" in script and r2e.SNAPSHOT_MESSAGE in script
    assert "rm -rf /r2e_tests" in r2e.agent_layer_script()
    assert "chown -R 0:0 /r2e_tests /r2e_grading" in r2e.grader_layer_script()


# --------------------------------------------------------------------------------------
# Grading plumbing, with a fake container
# --------------------------------------------------------------------------------------


class FakeBox:
    """Answers every command with success; the test run's log is `log`."""

    def __init__(self, log: str, exit_code: int, written: str = "./calc/ops.py\n") -> None:
        self.log, self.exit_code, self.written, self.commands, self.files = log, exit_code, written, [], {}

    def exec(self, command: str, timeout: float | None = None) -> ExecResult:
        self.commands.append(command)
        if "bash /r2e_grading/run_tests.sh" in command:
            return ExecResult(self.exit_code, "")
        if "-newer" in command:  # what the apply wrote
            return ExecResult(0, self.written)
        return ExecResult(0, "")

    def write_file(self, path: str, text: str) -> None:
        self.files[path] = text

    def read_file(self, path: str) -> str:
        return self.log if path.endswith("test_output.txt") else self.files[path]

    def __enter__(self) -> "FakeBox":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize(("log", "code", "resolved"), [(AFTER_GOLD, 1, True), (BEFORE, 1, False)])
def test_grade_uses_the_graders_image_and_r2e_reward(tmp_path, monkeypatch, log, code, resolved):
    import envs.task_images as task_images

    (task,) = load_tasks(write_rows(tmp_path / "rows.jsonl", [native_row()]))
    monkeypatch.setattr(task_images, "grading_image", lambda t: "grader:img")
    started: list[str] = []
    box = FakeBox(log, code)

    def factory(image, _task):
        started.append(image)
        return box

    report = grade(task, task.patch, sandbox_factory=factory, image="agent:img")
    assert started == ["grader:img"]  # never the agent's image it was handed
    assert report.resolved is resolved and not report.error and not report.tamper, report
    assert report.tests_status["FAIL_TO_PASS"]["success" if resolved else "failure"] == ["test_add_positive"]
    assert report.tests_status["PASS_TO_PASS"]["success"] == ["TestSub.test_sub", "test_add_zero", "test_known_bad"]
    run = next(c for c in box.commands if "run_tests.sh" in c)
    assert run.startswith("cd /testbed && ( " + VENV_ACTIVATE) and "> /tmp/agent-rl-grade-" in run
    assert any("ln -s /r2e_tests r2e_tests" in c for c in box.commands)


def test_a_protected_file_the_apply_wrote_is_tampering(tmp_path, monkeypatch):
    import envs.task_images as task_images

    (task,) = load_tasks(write_rows(tmp_path / "rows.jsonl", [native_row()]))
    monkeypatch.setattr(task_images, "grading_image", lambda t: "grader:img")
    box = FakeBox(AFTER_GOLD, 1, written="./calc/ops.py\n./r2e_tests/conftest.py\n./.venv/lib/x.pth\n")
    report = grade(task, task.patch, sandbox_factory=lambda image, _task: box)
    assert not report.resolved and report.tamper == [
        "r2e_tests/conftest.py: protected file changed after applying the patch",
        ".venv/lib/x.pth: protected file changed after applying the patch",
    ]
    assert report.tests_status["FAIL_TO_PASS"]["failure"] == ["test_add_positive"]  # nothing counts
