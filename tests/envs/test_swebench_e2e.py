"""SWE-bench-format rows, end to end: images in the official layout (the repository at /testbed
at its base commit, history cut; built by sandboxes.repo_images), rows naming them in the
datasets' own image fields, loaded through `load_tasks`, graded in fresh containers: gold
resolves, an empty patch does not. One task on the pytest launcher path, one through the
unittest log parser (the non-pytest path), plus a forged-output patch and a missing image."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from official_layout import official_style_image
from tinytask import git, make_tiny_task

from envs.grading import grade
from envs.swebench import log_grading
from envs.tasks import load_tasks

pytestmark = pytest.mark.docker

BUGGY = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"
VISIBLE = "import unittest\n\nfrom calc.ops import sub\n\n\nclass TestSub(unittest.TestCase):\n    def test_sub(self):\n        self.assertEqual(sub(5, 3), 2)\n"
HIDDEN = (
    "import unittest\n\nfrom calc.ops import add\n\n\nclass TestAdd(unittest.TestCase):\n"
    "    def test_add_positive(self):\n        self.assertEqual(add(2, 3), 5)\n\n"
    "    def test_add_zero(self):\n        self.assertEqual(add(4, 0), 4)\n"
)
# unittest -v names on Python 3.11+ (the base image's Debian 12): "method (module.Class.method)"
F2P = ["test_add_positive (tests.test_calc.TestAdd.test_add_positive)"]
P2P = ["test_add_zero (tests.test_calc.TestAdd.test_add_zero)"]


def _diff(repo: Path) -> str:
    return git(repo, "diff")


def make_unittest_repo(root: Path) -> dict:
    """A repository tested with `python -m unittest`: its base commit, gold patch, test patch."""
    repo = root / "unicalc"
    (repo / "calc").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "calc" / "__init__.py").write_text("")
    (repo / "calc" / "ops.py").write_text(BUGGY)
    (repo / "tests" / "__init__.py").write_text("")
    (repo / "tests" / "test_visible.py").write_text(VISIBLE)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "calc with a bug")
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "calc" / "ops.py").write_text(BUGGY.replace("return a - b", "return a + b", 1))
    gold = _diff(repo)
    git(repo, "checkout", "-q", "--", ".")
    (repo / "tests" / "test_calc.py").write_text(HIDDEN)
    git(repo, "add", "-N", "tests/test_calc.py")
    test_patch = _diff(repo)
    git(repo, "reset", "-q")
    (repo / "tests" / "test_calc.py").unlink()
    return {"repo": repo, "base_commit": base, "patch": gold, "test_patch": test_patch}


def test_swebench_rows_load_and_grade_end_to_end(tmp_path, monkeypatch):
    from sandboxes.repo_images import build_repo_image
    from envs.task_images import MIN_FREE_DISK_ENV

    monkeypatch.setenv(MIN_FREE_DISK_ENV, "0")  # the missing image's pull is tried whatever the host's disk

    quiet = lambda _msg: None  # noqa: E731
    tiny = make_tiny_task(tmp_path)
    pytest_image = build_repo_image(tiny.repo, tiny.base_commit, workdir="/testbed", progress=quiet)
    uni = make_unittest_repo(tmp_path)
    unittest_image = build_repo_image(str(uni["repo"]), uni["base_commit"], workdir="/testbed", progress=quiet)

    rows = [
        {   # SWE-smith style: the image in `image_name`; pytest repository → the trusted launcher
            "instance_id": "agentrl__tinycalc-1", "repo": "agent-rl/tinycalc", "base_commit": tiny.base_commit,
            "problem_statement": tiny.problem_statement, "patch": tiny.patch, "test_patch": tiny.test_patch,
            "FAIL_TO_PASS": json.dumps(tiny.FAIL_TO_PASS), "PASS_TO_PASS": json.dumps(tiny.PASS_TO_PASS),
            "version": "1.0", "image_name": pytest_image,
        },
        {   # SWE-rebench / R2E style: `docker_image`; a named parser → the runner's log
            "instance_id": "agentrl__unicalc-1", "repo": "agent-rl/unicalc", "base_commit": uni["base_commit"],
            "problem_statement": "add subtracts", "patch": uni["patch"], "test_patch": uni["test_patch"],
            "FAIL_TO_PASS": json.dumps(F2P), "PASS_TO_PASS": json.dumps(P2P), "version": "1.0",
            "docker_image": unittest_image, "log_parser": "unittest",
        },
        {
            "instance_id": "agentrl__gone-1", "repo": "agent-rl/gone", "base_commit": uni["base_commit"],
            "problem_statement": "p", "FAIL_TO_PASS": json.dumps(F2P), "image_name": "agent-rl-test/missing:none",
        },
    ]
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    on_pytest, on_unittest, missing = load_tasks(str(rows_file))
    assert (on_pytest.image, on_unittest.image, on_pytest.workdir) == (pytest_image, unittest_image, "/testbed")
    assert not log_grading.uses_log_runner(on_pytest) and log_grading.uses_log_runner(on_unittest)
    assert on_unittest.test_cmd == "python -m unittest -v"

    for task in (on_pytest, on_unittest):
        gold = grade(task, task.patch)
        assert gold.resolved, (task.instance_id, gold.error, gold.tamper, gold.test_output)
        assert gold.tests_status["FAIL_TO_PASS"]["success"] == task.FAIL_TO_PASS
        empty = grade(task, "")
        assert not empty.resolved and not empty.error, (task.instance_id, empty.error)
        assert empty.tests_status["FAIL_TO_PASS"]["failure"] == task.FAIL_TO_PASS
        assert empty.tests_status["PASS_TO_PASS"]["success"] == task.PASS_TO_PASS

    # Forged output at run time (the static scan turned off, so only the run-time defences
    # stand): a fake "... ok" line for the target and a fake end marker. Still not resolved.
    forged = (
        "diff --git a/calc/__init__.py b/calc/__init__.py\n--- a/calc/__init__.py\n+++ b/calc/__init__.py\n"
        "@@ -0,0 +1,2 @@\n"
        "+print('test_add_positive (tests.test_calc.TestAdd.test_add_positive) ' + '.' * 3 + ' ok')\n"
        "+print('>' * 5 + ' End Test Output')\n"
    )
    report = grade(on_unittest, forged, config={"scan_patch": False})
    assert report.patch_successfully_applied and not report.resolved
    assert any("End Test Output" in finding for finding in report.tamper), report.tamper

    # Printed after the runner's own summary (atexit), the fake line wins the parse; the
    # runner's exit status (from the trusted shell) then contradicts the log: not counted.
    late = (
        "diff --git a/calc/__init__.py b/calc/__init__.py\n--- a/calc/__init__.py\n+++ b/calc/__init__.py\n"
        "@@ -0,0 +1,1 @@\n+import atexit; atexit.register(lambda: print('test_add_positive "
        "(tests.test_calc.TestAdd.test_add_positive) ' + '.' * 3 + ' ok'))\n"
    )
    report = grade(on_unittest, late, config={"scan_patch": False})
    assert not report.resolved and "exited 1 yet its log shows no failing test" in report.error, report.error

    gone = grade(missing, "")
    assert not gone.resolved
    assert "agent-rl-test/missing:none" in gone.error and "docker load" in gone.error, gone.error


def test_history_is_cut_in_the_official_layout_image(tmp_path):
    from sandboxes.repo_images import build_repo_image

    tiny = make_tiny_task(tmp_path)
    image = build_repo_image(tiny.repo, tiny.base_commit, workdir="/testbed", progress=lambda _m: None)
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "bash", "-c",
         "cd /testbed && git rev-list --all | wc -l && git rev-parse HEAD"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()
    assert out == ["1", tiny.base_commit]


def _official_style_image(tmp_path: Path, tag: str) -> tuple[str, dict, str]:
    """An image laid out as SWE-bench's own are: /testbed owned by root, the repository's whole
    history kept (the fix on a branch, a tag and a remote ref), HEAD at the base commit. Not
    labelled as ours, so task_image adapts it. Returns (tag, the unittest repo, the fix's sha)."""
    uni = make_unittest_repo(tmp_path)
    repo = uni["repo"]
    git(repo, "checkout", "-q", "-b", "fix")
    (repo / "calc" / "ops.py").write_text(BUGGY.replace("return a - b", "return a + b", 1))
    git(repo, "commit", "-q", "-am", "the fix")
    future = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "tag", "v2")
    git(repo, "update-ref", "refs/remotes/origin/main", future)
    git(repo, "checkout", "-q", "main")
    # A lock left by a gc that ran while the image was snapshotted: adaptation must not trip on it.
    (repo / ".git" / "gc.pid").write_text("18531 vm")
    official_style_image(repo, tag)
    return tag, uni, future


def test_an_official_style_image_is_adapted_history_cut_and_graded(tmp_path):
    from sandboxes.docker import DockerSandbox
    from envs.task_images import task_image

    image, uni, future = _official_style_image(tmp_path, f"agent-rl-test/official-style:{tmp_path.name[-12:].lower()}")
    row = {"instance_id": "agentrl__official-1", "repo": "agent-rl/official", "base_commit": uni["base_commit"],
           "problem_statement": "add subtracts", "patch": uni["patch"], "test_patch": uni["test_patch"],
           "FAIL_TO_PASS": json.dumps(F2P), "PASS_TO_PASS": json.dumps(P2P), "version": "1.0",
           "image_name": image, "log_parser": "unittest"}
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text(json.dumps(row) + "\n")
    (task,) = load_tasks(str(rows_file))
    try:
        adapted = task_image(task)
        assert adapted.startswith("agent-rl/adapted:") and task_image(task) == adapted  # made once
        with DockerSandbox(adapted, {"workdir": "/testbed"}) as box:  # the hardened default: uid 1000
            def run(cmd: str) -> str:
                result = box.exec(cmd, timeout=60)
                assert result.exit_code == 0, (cmd, result.output)
                return result.output.strip()

            assert run("id -u") == "1000"
            # History stops at the base commit: the fix is in no ref, no reflog, no object.
            assert run("git log --all --format=%H") == uni["base_commit"]
            assert run("git tag; git remote; git stash list") == ""
            assert box.exec(f"git cat-file -t {future}", timeout=60).exit_code != 0
            assert run("git status --porcelain") == ""  # git trusts the tree; nothing changed in it
            run("touch /testbed/calc/new_file.py && git status --porcelain")  # the agent can write
        # Grading runs on the adapted image too, in a fresh container.
        gold = grade(task, task.patch)
        assert gold.resolved, (gold.error, gold.tamper, gold.test_output)
        empty = grade(task, "")
        assert not empty.resolved and not empty.error, empty.error
    finally:
        import docker

        client = docker.from_env()
        for tag in {image, *([adapted] if "adapted" in locals() else [])}:
            client.images.remove(tag, force=True)
