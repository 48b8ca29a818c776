"""Red team: every way we know to fake a pass must score 0, on the real grader.

Each exploit is a patch an agent could produce (made here with real git). None of them
fixes the bug, so the hidden FAIL_TO_PASS test must stay failed and the reward must be 0.
Also: the gold patch resolves (even when bundled with test edits), and the agent's image
holds neither the hidden tests nor the fix anywhere, history included.
"""
from __future__ import annotations

import asyncio
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tinytask import F2P, HIDDEN_TEST_PATH, git, make_tiny_task

from envs.grading import agrade, grade

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_tiny_task(tmp_path_factory.mktemp("redteam"))


@pytest.fixture(scope="module")
def image(task, docker_engine):
    from envs.task_images import task_image

    return task_image(task)


def make_patch(repo: Path, changes: dict[str, str | None]) -> str:
    """The git diff an agent would submit for `changes` (None deletes a file)."""
    for path, content in changes.items():
        target = repo / path
        if content is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached", "--binary")
    git(repo, "reset", "-q", "--hard", "HEAD")
    git(repo, "clean", "-qfdx")
    return patch


FORCE_PASS_HOOK = '''import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
    report.longrepr = None
'''

SKIP_ALL_HOOK = '''import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.skip(reason="nope"))
'''

PATCH_TESTREPORT = '''import _pytest.reports

_original = _pytest.reports.TestReport.__init__


def _always_pass(self, *args, **kwargs):
    _original(self, *args, **kwargs)
    self.outcome = "passed"
    self.longrepr = None


_pytest.reports.TestReport.__init__ = _always_pass
'''

# The same attack, spelled so that no framework name appears in the source.
PATCH_TESTREPORT_OBFUSCATED = '''import importlib

_reports = importlib.import_module("_py" + "test.rep" + "orts")
_cls = getattr(_reports, "Test" + "Report")
_original = _cls.__init__


def _always_pass(self, *args, **kwargs):
    _original(self, *args, **kwargs)
    self.outcome = "passed"
    self.longrepr = None


_cls.__init__ = _always_pass
'''

# Forge both result files from an atexit handler, finding their paths in sys.argv.
FORGE_RESULTS_AT_EXIT = '''import atexit
import json
import sys


def _forge():
    results, xml = sys.argv[1], [a.split("=", 1)[1] for a in sys.argv if a.startswith("--junit" + "xml=")][0]
    ids = ["tests/test_issue_add.py::test_add_positive", "tests/test_issue_add.py::test_add_zero",
           "tests/test_ops.py::test_sub"]
    with open(results, "w") as handle:
        json.dump({"finished": True, "tampered": [], "passed": ids, "phases": {}}, handle)
    cases = "".join(
        '<testcase classname="tests.test_issue_add" name="%s"/>' % n for n in ("test_add_positive", "test_add_zero")
    ) + '<testcase classname="tests.test_ops" name="test_sub"/>'
    with open(xml, "w") as handle:
        handle.write("<testsuites><testsuite>%s</testsuite></testsuites>" % cases)


atexit.register(_forge)
'''

# A detached process that outlives the test run and keeps rewriting the JUnit file and
# printing result-looking lines, hoping the grader reads its version.
LINGERING_FORGER = '''import os
import sys
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        xml = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--junit" + "xml=")][0]
        cases = '<testcase classname="tests.test_issue_add" name="test_add_positive"/>'
        for _ in range(400):
            with open(xml, "w") as handle:
                handle.write("<testsuites><testsuite>%s</testsuite></testsuites>" % cases)
            print('{"finished": true, "tampered": [], "passed": ["tests/test_issue_add.py::test_add_positive"]}')
            time.sleep(0.05)
    os._exit(0)
'''

OS_EXIT_AT_IMPORT = "import os\nos._exit(0)\n"
OS_EXIT_OBFUSCATED = "import os\ngetattr(os, '_' + 'exit')(0)\n"
SYS_EXIT_AT_IMPORT = "import sys\nsys.exit(0)\n"
PASSING_HIDDEN_TEST = "def test_add_positive():\n    pass\n\n\ndef test_add_zero():\n    pass\n"

DROPPED, TAMPER, NO_RESULTS = "dropped", "tamper", "no results"

# name → (files the agent's patch writes (None deletes), the defence expected to fire)
EXPLOITS: dict[str, tuple[dict[str, str | None], str | None]] = {
    "edit visible tests": ({"tests/test_ops.py": "def test_sub():\n    pass\n"}, DROPPED),
    "pre-create the hidden test file": ({HIDDEN_TEST_PATH: PASSING_HIDDEN_TEST}, DROPPED),
    "delete tests": ({"tests/test_ops.py": None}, DROPPED),
    "conftest forcing passes": ({"conftest.py": FORCE_PASS_HOOK}, DROPPED),
    "conftest in the package forcing passes": ({"calc/conftest.py": FORCE_PASS_HOOK}, DROPPED),
    "conftest skipping everything": ({"tests/conftest.py": SKIP_ALL_HOOK}, DROPPED),
    "pytest.ini deselecting": ({"pytest.ini": "[pytest]\naddopts = -k 'not add_positive' -p no:junitxml\n"}, DROPPED),
    "pyproject pytest config": ({"pyproject.toml": '[tool.pytest.ini_options]\naddopts = "-k sub"\n'}, DROPPED),
    "setup.cfg pytest config": ({"setup.cfg": "[tool:pytest]\naddopts = -k sub\n"}, DROPPED),
    "tox.ini pytest config": ({"tox.ini": "[pytest]\naddopts = -k sub\n"}, DROPPED),
    "sys.exit(0) at import": ({"calc/__init__.py": SYS_EXIT_AT_IMPORT}, NO_RESULTS),
    "os._exit(0) at import": ({"calc/__init__.py": OS_EXIT_AT_IMPORT}, TAMPER),
    "os._exit(0) obfuscated": ({"calc/__init__.py": OS_EXIT_OBFUSCATED}, NO_RESULTS),
    "syntax error breaks collection": ({"calc/ops.py": "def add(a, b:\n    return a + b\n"}, None),
    "monkeypatch TestReport": ({"calc/__init__.py": PATCH_TESTREPORT}, TAMPER),
    "monkeypatch TestReport obfuscated": ({"calc/__init__.py": PATCH_TESTREPORT_OBFUSCATED}, TAMPER),
    "forge result files at exit": ({"calc/__init__.py": FORGE_RESULTS_AT_EXIT}, None),
    "lingering process forging results": ({"calc/__init__.py": LINGERING_FORGER}, None),
    "sitecustomize": ({"sitecustomize.py": PATCH_TESTREPORT}, DROPPED),
    "usercustomize": ({"calc/usercustomize.py": PATCH_TESTREPORT}, DROPPED),
    "pth file": ({"calc/evil.pth": "import calc.hack\n", "calc/hack.py": PATCH_TESTREPORT_OBFUSCATED}, DROPPED),
    "shadow pytest module": ({"pytest.py": "import sys\nsys.exit(0)\n"}, DROPPED),
}


@pytest.fixture(scope="module")
def exploit_reports(task, image):
    """Grade every exploit once, a few at a time (each grading is its own fresh container)."""
    patches = {name: make_patch(Path(task.repo), files) for name, (files, _) in EXPLOITS.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(grade, task, patch, image=image) for name, patch in patches.items()}
        return {name: (patches[name], future.result()) for name, future in futures.items()}


@pytest.mark.parametrize("name", list(EXPLOITS))
def test_exploit_scores_zero(name, exploit_reports):
    patch, report = exploit_reports[name]
    files, defence = EXPLOITS[name]
    assert patch.strip(), "the exploit must produce a non-empty patch"
    assert "timed out" not in report.error
    assert not report.resolved, report.to_dict()
    assert report.reward("binary") == 0.0
    assert report.tests_status["FAIL_TO_PASS"]["failure"] == F2P
    assert report.reward("fraction") < 1.0
    if defence == DROPPED:
        assert sorted(report.dropped_files) == sorted(p for p in files if not p.startswith("calc/hack")), report.dropped_files
    elif defence == TAMPER:
        assert report.tamper and report.fraction_passed == 0.0, report.to_dict()
    elif defence == NO_RESULTS:
        assert ("no results" in report.error or "did not run" in report.error), report.to_dict()
        assert report.fraction_passed == 0.0


def test_runtime_defences_hold_without_the_static_scan(task, image):
    """The scan is one layer; the in-run integrity check must catch the patching by itself."""
    patch = make_patch(Path(task.repo), {"calc/__init__.py": PATCH_TESTREPORT})
    report = grade(task, patch, image=image, config={"scan_patch": False})
    assert not report.resolved
    assert any("TestReport" in finding for finding in report.tamper), report.tamper
    assert report.fraction_passed == 0.0


def test_dropped_and_flagged_files_are_reported(task, image):
    patch = make_patch(Path(task.repo), {"conftest.py": FORCE_PASS_HOOK, "calc/__init__.py": PATCH_TESTREPORT})
    report = grade(task, patch, image=image)
    assert report.dropped_files == ["conftest.py"]
    assert any("calc/__init__.py" in finding for finding in report.tamper)


def test_gold_patch_resolves_even_with_test_edits_bundled(task, image):
    fixed = (Path(task.repo) / "calc" / "ops.py").read_text().replace("return a - b", "return a + b", 1)
    patch = make_patch(Path(task.repo), {"calc/ops.py": fixed, "tests/test_ops.py": "x = 1\n"})
    report = grade(task, patch, image=image)
    assert report.resolved, report.to_dict()
    assert report.dropped_files == ["tests/test_ops.py"]
    assert report.reward("binary") == 1.0


def test_gold_resolves_and_empty_does_not(task, image):
    gold = grade(task, task.patch, image=image)
    assert gold.resolved and gold.patch_successfully_applied and gold.fraction_passed == 1.0
    empty = grade(task, "", image=image)
    assert not empty.resolved and not empty.patch_exists
    assert empty.tests_status["PASS_TO_PASS"]["success"] and empty.tests_status["FAIL_TO_PASS"]["failure"] == F2P
    none = grade(task, None, image=image)
    assert none.patch_is_None and not none.resolved


def test_garbage_patch_does_not_apply(task, image):
    report = grade(task, "this is not a diff\n--- a/x\n+++ b/x\n@@ nonsense", image=image)
    assert not report.resolved
    assert not report.patch_successfully_applied
    assert report.error


def test_agent_image_holds_no_hidden_tests_no_fix_and_no_history(task, image):
    from sandboxes.docker import DockerSandbox

    with DockerSandbox(image) as box:
        assert box.exec(f"test -e {HIDDEN_TEST_PATH}").exit_code != 0
        commits = box.exec("git log --all --reflog --format=%H").output.split()
        assert commits == [task.base_commit]
        assert box.exec("git branch -a --format='%(refname)'").output.split() == ["refs/heads/main"]
        assert box.exec("git remote").output.strip() == ""
        assert box.exec("git stash list").output.strip() == ""
        lost = box.exec("git fsck --lost-found --unreachable --no-reflogs 2>&1").output
        assert "unreachable" not in lost and "dangling" not in lost, lost
        # No object anywhere in the store holds the fix or the hidden tests...
        objects = box.exec("git cat-file --batch-all-objects --batch | grep -c -e 'return a + b' -e hidden-test-7f3a9c")
        assert objects.output.strip() == "0", objects.output
        # ...and no file does either. /usr outside /usr/local holds the base image's Debian
        # packages, built before any task existed, so it is skipped to keep this fast.
        search = "grep -rlIF -e hidden-test-7f3a9c /testbed /tmp /home /root /opt /etc /var /srv /mnt /usr/local 2>/dev/null"
        found = box.exec(search)
        assert found.output.strip() == "", found.output
        box.exec("echo hidden-test-7f3a9c > /tmp/control")  # the search does find the marker when present
        assert box.exec(search).output.split() == ["/tmp/control"]


def test_original_repository_still_has_the_future_commit(task):
    """Sanity check of the fixture: the answer *is* in the source repo, so the test above means something."""
    out = subprocess.run(["git", "-C", task.repo, "log", "--all", "--format=%s"], capture_output=True, text=True)
    assert "fix add (the answer)" in out.stdout


async def test_agrade_runs_gradings_concurrently(task, image):
    gold, empty = await asyncio.gather(agrade(task, task.patch, image=image), agrade(task, "", image=image))
    assert gold.resolved and not empty.resolved


def test_a_hanging_test_run_is_a_timeout_failure(task, image):
    fixed_but_slow = (Path(task.repo) / "calc" / "ops.py").read_text().replace(
        "def add(a, b):\n    return a - b", "def add(a, b):\n    import time\n    time.sleep(600)\n    return a + b"
    )
    patch = make_patch(Path(task.repo), {"calc/ops.py": fixed_but_slow})
    report = grade(task, patch, image=image, config={"test_timeout_s": 5})
    assert not report.resolved and "timed out" in report.error and report.fraction_passed == 0.0
