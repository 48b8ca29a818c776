"""The grader's pure parts: patch splitting and filtering, the static scan, the test command.
(JUnit parsing moved with the protocol: test_pytest_protocol.py.)"""
from __future__ import annotations

import pytest

from envs.grading import (
    GradeReport,
    GradingConfig,
    GradingError,
    _test_command,
)
from envs.patch_screen import filter_patch, patch_paths, protection_reason, scan_patch, split_patch
from envs.pytest_protocol import results_from_output
from envs.tasks import Task
from strictconfig import ConfigError

SRC = """diff --git a/pkg/mod.py b/pkg/mod.py
index 1111111..2222222 100644
--- a/pkg/mod.py
+++ b/pkg/mod.py
@@ -1 +1 @@
-x = 1
+x = 2
"""
TEST = """diff --git a/tests/test_mod.py b/tests/test_mod.py
deleted file mode 100644
index 3333333..0000000
--- a/tests/test_mod.py
+++ /dev/null
@@ -1 +0,0 @@
-def test_x(): assert False
"""
RENAME_INTO_TESTS = """diff --git a/pkg/helper.py b/tests/helper.py
similarity index 100%
rename from pkg/helper.py
rename to tests/helper.py
"""
QUOTED = '''diff --git "a/pkg/caf\\303\\251/conftest.py" "b/pkg/caf\\303\\251/conftest.py"
new file mode 100644
index 0000000..4444444
--- /dev/null
+++ "b/pkg/caf\\303\\251/conftest.py"
@@ -0,0 +1 @@
+x = 1
'''
SYMLINK = """diff --git a/pkg/link.py b/pkg/link.py
new file mode 120000
index 0000000..5555555
--- /dev/null
+++ b/pkg/link.py
@@ -0,0 +1 @@
+../tests/test_mod.py
\\ No newline at end of file
"""
PLAIN = """--- pkg/a.py\t2024-01-01
+++ pkg/a.py\t2024-01-02
@@ -1 +1 @@
-a
+b
--- conftest.py
+++ conftest.py
@@ -0,0 +1 @@
+import pytest
"""


def test_split_patch_finds_every_path():
    sections = split_patch(SRC + TEST + RENAME_INTO_TESTS)
    assert [s.paths for s in sections] == [("pkg/mod.py",), ("tests/test_mod.py",), ("pkg/helper.py", "tests/helper.py")]
    assert patch_paths(QUOTED) == ["pkg/café/conftest.py"]
    assert split_patch(SYMLINK)[0].is_symlink
    assert [s.paths for s in split_patch(PLAIN)] == [("pkg/a.py",), ("conftest.py",)]


@pytest.mark.parametrize(
    "path, reason",
    [
        ("pkg/mod.py", None),
        ("src/tests_helpers.py", None),
        ("docs/testing.md", None),
        ("tests/test_mod.py", "under a test directory"),
        ("pkg/test/data.json", "under a test directory"),
        ("pkg/test_mod.py", "test file"),
        ("pkg/mod_test.py", "test file"),
        ("conftest.py", "test configuration"),
        ("deep/er/conftest.py", "test configuration"),
        ("pytest.ini", "test configuration"),
        ("pyproject.toml", "test configuration"),
        ("setup.cfg", "test configuration"),
        ("tox.ini", "test configuration"),
        ("sitecustomize.py", "interpreter start-up hook"),
        ("pkg/usercustomize.py", "interpreter start-up hook"),
        ("pkg/x.pth", "interpreter start-up hook"),
        ("pytest.py", "shadows the test framework"),
        ("_pytest/runner.py", "shadows the test framework"),
        ("pluggy/__init__.py", "shadows the test framework"),
        ("../outside.py", "outside the repository"),
        (".git/config", "outside the repository"),
        ("pkg/hidden_spec.py", "hidden test file"),
    ],
)
def test_protection_rules(path, reason):
    assert protection_reason(path, ["pkg/hidden_spec.py"]) == reason


def test_filter_patch_keeps_source_and_drops_the_rest():
    kept, dropped = filter_patch(SRC + TEST + RENAME_INTO_TESTS + QUOTED + SYMLINK)
    assert kept == SRC
    assert dropped == ["pkg/café/conftest.py", "pkg/helper.py", "pkg/link.py", "tests/helper.py", "tests/test_mod.py"]
    kept, dropped = filter_patch(PLAIN)
    assert "conftest" not in kept and dropped == ["conftest.py"]
    assert filter_patch("") == ("", [])


def test_scan_flags_framework_references_in_added_lines_only():
    touching = SRC.replace("+x = 2", "+import _pytest.reports as r; r.TestReport.outcome = 'passed'")
    findings = scan_patch(touching)
    assert findings[0].startswith("pkg/mod.py: references the test framework")
    assert any("test reporting" in f for f in findings)
    assert scan_patch(SRC) == []
    removing = SRC.replace("-x = 1", "-import pytest")
    assert scan_patch(removing) == []  # deleting such a line is fine
    assert scan_patch(SRC.replace("+x = 2", "+import os; os._exit(0)")) == ["pkg/mod.py: hard process exit ('os._exit')"]


def _task(**overrides: object) -> Task:
    return Task(instance_id="t", repo="/r", base_commit="c", problem_statement="p", **overrides)


def test_test_command_runs_the_trusted_launcher_in_isolated_mode():
    command = _test_command(_task(), "/tmp/g/run.py", "/tmp/g/r.json", "/tmp/g/j.xml", ["tests/test_a.py"])
    assert "python3 -I /tmp/g/run.py /tmp/g/r.json /testbed --" in command
    for flag in ("-p no:cacheprovider", "-o addopts=", "-c /dev/null", "--confcutdir /testbed", "--junitxml=/tmp/g/j.xml"):
        assert flag in command
    assert "PYTHONNOUSERSITE=1" in command and command.endswith("tests/test_a.py")
    assert "/opt/py/bin/python -I" in _test_command(_task(test_cmd="/opt/py/bin/python -m pytest"), "r", "x", "j", [])
    with pytest.raises(GradingError, match="is not pytest"):
        _test_command(_task(test_cmd="make test"), "r", "x", "j", [])


def test_grading_config_and_rewards():
    with pytest.raises(ConfigError, match="unknown key.*'scan_patches'.*did you mean 'scan_patch'"):
        GradingConfig.from_config({"scan_patches": False})
    with pytest.raises(ConfigError, match="test_timeout_s must be positive"):
        GradingConfig(test_timeout_s=0)
    report = GradeReport("t", fraction_passed=0.75)  # 3 of 4 target tests, 1 of 2 FAIL_TO_PASS
    report.tests_status["FAIL_TO_PASS"] = {"success": ["a"], "failure": ["b"]}
    report.tests_status["PASS_TO_PASS"] = {"success": ["c", "d"], "failure": []}
    assert report.reward("binary") == 0.0 and report.reward("fraction") == 0.5  # FAIL_TO_PASS only
    report.resolved = True
    assert report.reward("binary") == report.reward("fraction") == 1.0
    with pytest.raises(ValueError, match="unknown reward kind"):
        report.reward("dense")
    assert set(report.to_dict()) >= {
        "patch_is_None", "patch_exists", "patch_successfully_applied", "resolved", "tests_status",
        "fraction_passed", "error", "dropped_files", "timings",
    }


def test_results_are_read_only_from_the_nonce_frame():
    nonce = "n0nce"
    good = 'noise\nn0nce<{"finished": true, "passed": ["t::a"]}>n0nce\nmore'
    assert results_from_output(good, nonce) == {"finished": True, "passed": ["t::a"]}
    assert results_from_output('other<{"finished": true}>other', nonce) is None  # a forged frame
    assert results_from_output(good + good, nonce) is None  # two frames: someone is echoing
    assert results_from_output("n0nce<not json>n0nce", nonce) is None
    assert results_from_output("", nonce) is None
