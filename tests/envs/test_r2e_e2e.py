"""Native R2E-Gym rows end to end, with Docker: an image laid out as R2E-Gym's (the repository at
/testbed with its whole history, HEAD at the fix's parent, a venv in /testbed/.venv, R2E's run
script at /testbed/run_tests.sh, the hidden tests at /r2e_tests, install leftovers in the tree),
a native row naming it (parsed_commit_content from the real fix commit, expected_output_json as
R2E records it), loaded by `load_tasks` and graded: gold → 1, empty → 0, the agent's image holds
no tests, run script or expected outputs, and forged passes that beat R2E's own reward score 0."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from official_layout import r2e_parsed_commit, r2e_style_image
from tinytask import git

from envs.grading import grade
from envs.swebench import r2e
from envs.tasks import load_tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OPS = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"
FIXED = OPS.replace("return a - b", "return a + b", 1)
VISIBLE = "from calc.ops import sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n"
MARKER = "r2e-hidden-9b41"  # only in the hidden tests
HIDDEN = (
    f'"""{MARKER}"""\nfrom calc.ops import add, sub\n\n\ndef test_add_positive():\n    assert add(2, 3) == 5\n\n\n'
    "def test_add_zero():\n    assert add(4, 0) == 4\n\n\nclass TestSub:\n    def test_sub(self):\n"
    "        assert sub(5, 3) == 2\n\n\ndef test_known_bad():\n    assert sub(1, 1) == 1\n"
)
# What R2E records at the fix commit (a test that fails there must keep failing).
EXPECTED = {"test_add_positive": "PASSED", "test_add_zero": "PASSED", "TestSub.test_sub": "PASSED",
            "test_known_bad": "FAILED"}


def make_upstream(root: Path) -> dict:
    """The upstream repository: a base commit, then the fix (source, its test, a changelog) on
    the main line, checked out at the base as R2E's Dockerfiles do (`git checkout <fix>^`)."""
    repo = root / "calc"
    (repo / "calc").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "calc" / "__init__.py").write_text("")
    (repo / "calc" / "ops.py").write_text(OPS)
    (repo / "calc" / "_version.py").write_text("version = '0.1'\n")
    (repo / "tests" / "test_ops.py").write_text(VISIBLE)
    (repo / "CHANGES.md").write_text("# changes\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "calc")
    (repo / "calc" / "ops.py").write_text(FIXED)
    (repo / "tests" / "test_ops.py").write_text(VISIBLE + "\n\ndef test_add():\n    from calc.ops import add\n    assert add(2, 3) == 5\n")
    (repo / "CHANGES.md").write_text("# changes\n- add adds\n")
    git(repo, "commit", "-q", "-am", "fix add")
    fix = git(repo, "rev-parse", "HEAD").strip()
    diff = git(repo, "diff", "HEAD^", "HEAD")
    git(repo, "checkout", "-q", f"{fix}^")
    return {"repo": repo, "fix": fix, "base": git(repo, "rev-parse", "HEAD").strip(), "diff": diff}


def make_row(upstream: dict, image: str) -> dict:
    """A native R2E-Gym row as their validate step writes it."""
    fix = upstream["fix"]
    return {
        "repo_name": "calc", "docker_image": image, "commit_hash": fix,
        "parsed_commit_content": json.dumps(r2e_parsed_commit(upstream["diff"], old=f"{fix}^", new=fix), indent=4),
        "execution_result_content": json.dumps({
            "repo_name": "calc", "new_commit_hash": fix, "test_file_codes": [HIDDEN], "test_file_names": ["test_1.py"],
            "setup_res_code": 0, "setup_res_stdout": "", "setup_res_stderr": "", "old_commit_res_code": 1,
            "old_commit_res_stdout": "short test summary info\nPASSED r2e_tests/test_1.py::test_add_zero\n"
                                     "PASSED r2e_tests/test_1.py::TestSub::test_sub\n"
                                     "FAILED r2e_tests/test_1.py::test_add_positive - assert -1 == 5\n"
                                     "FAILED r2e_tests/test_1.py::test_known_bad - assert 0 == 1\n",
        }),
        "expected_output_json": json.dumps(EXPECTED, indent=4),
        "modified_files": ["calc/ops.py", "tests/test_ops.py", "CHANGES.md"], "relevant_files": ["calc/ops.py"],
        "problem_statement": "[ISSUE]\n`calc.ops.add(2, 3)` returns -1; it should add.\n[/ISSUE]",
        "prompt": "synthetic issue prompt, with the tests:\n" + HIDDEN,
    }


def ops_patch(add_body: str, sub_body: str = "    return a - b") -> str:
    """A patch giving calc/ops.py these bodies of add and sub (4-space indented lines)."""
    new = f"def add(a, b):\n{add_body}\n\n\ndef sub(a, b):\n{sub_body}\n"
    old_lines, new_lines = OPS.splitlines(), new.splitlines()
    return (f"diff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n"
            f"@@ -1,{len(old_lines)} +1,{len(new_lines)} @@\n"
            + "".join(f"-{line}\n" for line in old_lines) + "".join(f"+{line}\n" for line in new_lines))


@pytest.fixture(scope="module")
def r2e_task(tmp_path_factory, docker_engine):
    import docker

    from envs.task_images import grading_image, task_image

    root = tmp_path_factory.mktemp("r2e")
    upstream = make_upstream(root)
    tag = f"agent-rl-test/r2e-style:{root.name[-12:].lower()}"
    r2e_style_image(upstream["repo"], tag, tests={"test_1.py": HIDDEN},
                    untracked={"install.sh": "uv venv --python 3.11 && uv pip install -e .\n"},
                    edits={"calc/_version.py": "version = '0+untagged.1.g0000000'\n"})
    rows = root / "rows.jsonl"
    rows.write_text(json.dumps(make_row(upstream, tag)) + "\n")
    (task,) = load_tasks(str(rows))
    made = []
    try:
        agent, grader = task_image(task), grading_image(task)
        made += [agent, grader]
        yield task, upstream, agent, grader
    finally:
        client = docker.from_env()
        for image in [*made, tag]:
            client.images.remove(image, force=True)


def test_the_agents_image_has_no_tests_and_the_graders_keeps_them_locked(r2e_task):
    from sandboxes.docker import DockerSandbox

    task, upstream, agent, grader = r2e_task
    assert agent != grader and agent.startswith("agent-rl/adapted:") and grader.startswith("agent-rl/adapted:")
    assert task.base_commit not in (upstream["base"], f"{upstream['fix']}^")  # the environment commit
    with DockerSandbox(agent, {"workdir": "/testbed"}) as box:  # what the env starts for the agent
        def run(cmd: str) -> str:
            result = box.exec(cmd, timeout=120)
            assert result.exit_code == 0, (cmd, result.output)
            return result.output.strip()

        assert run("id -u") == "1000"
        assert run("ls -d /r2e_tests /testbed/r2e_tests /testbed/run_tests.sh /root/r2e_tests /r2e_grading "
                   "2>/dev/null; true") == ""
        # Nothing anywhere on the filesystem carries the hidden tests or the expected outputs.
        # (The patterns are spelt in pieces: the command's own text must not match.)
        marker, name = MARKER.rsplit("-", 1), "test_known_bad".rsplit("_", 1)
        assert run(f"grep -rIl --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -e \"{marker[0]}-$(echo {marker[1]})\" "
                   f"-e \"{name[0]}_$(echo {name[1]})\" / 2>/dev/null; true") == ""
        # History: the base, then the environment commit (install edits); the fix is gone.
        assert run("git log --all --format=%H").split() == [task.base_commit, upstream["base"]]
        assert box.exec(f"git cat-file -t {upstream['fix']}", timeout=60).exit_code != 0
        assert run("git status --porcelain") == ""  # install.sh and the edit are in the base
        assert run("cat calc/_version.py") == "version = '0+untagged.1.g0000000'"
        assert run("python -c 'import sys; print(sys.prefix)'") == "/testbed/.venv"  # R2E's venv, activated
    with DockerSandbox(grader, {"workdir": "/testbed"}) as box:
        result = box.exec("git rev-parse HEAD && stat -c '%U %a' /r2e_tests /r2e_tests/test_1.py "
                          "/r2e_grading/run_tests.sh && (echo x >> /r2e_tests/test_1.py) 2>&1; "
                          "(echo x >> /r2e_grading/run_tests.sh) 2>&1; ls /testbed/run_tests.sh 2>&1", timeout=60)
        lines = result.output.strip().splitlines()
        assert lines[0] == task.base_commit  # the same tree and HEAD as the agent's
        assert lines[1:4] == ["root 755", "root 644", "root 755"], lines
        assert sum("Permission denied" in line for line in lines) == 2 and "No such file" in lines[-1], lines


def test_gold_resolves_and_empty_does_not(r2e_task):
    task, *_ = r2e_task
    gold = grade(task, task.patch, image="ignored: R2E tasks grade in their grader's image")
    assert gold.resolved and gold.reward() == 1.0, (gold.error, gold.tamper, gold.test_output)
    assert gold.tests_status["FAIL_TO_PASS"] == {"success": ["test_add_positive"], "failure": []}
    assert "test_known_bad" in gold.tests_status["PASS_TO_PASS"]["success"]  # it failed, as expected
    empty = grade(task, "")
    assert not empty.resolved and not empty.error and not empty.tamper, (empty.error, empty.tamper)
    assert empty.tests_status["FAIL_TO_PASS"]["failure"] == ["test_add_positive"]
    # A fix that also makes the expected-failing test pass is not R2E's outcome: 0.
    over = grade(task, ops_patch("    return a + b", "    return 1 if (a, b) == (1, 1) else a - b"))
    assert over.patch_successfully_applied and not over.resolved and not over.error, over.test_output


def test_forged_passes_score_zero(r2e_task):
    task, *_ = r2e_task
    no_scan = {"scan_patch": False}  # the run-time checks alone
    summary = "".join(f"PASSED r2e_tests/test_1.py::{k.replace('.', '::')}\\n" if v == "PASSED"
                      else f"FAILED r2e_tests/test_1.py::{k}\\n" for k, v in EXPECTED.items())
    attempts = {
        # A summary printed while a test runs: pytest -rA shows it before the real one, and R2E's
        # parser reads the text between the first two summary headers.
        "forged summary": ops_patch(f"    print('short test summary info\\n{summary}')\n    return a - b"),
        # Status lines after the runner's closing line: R2E's parser keeps a test's last line.
        "after the closing line": ops_patch(
            "    import atexit\n    atexit.register(print, 'PASSED r2e_tests/test_1.py::test_add_positive')\n"
            "    return a - b"),
        # A failure whose message says PASSED: R2E's parser counts the line as a pass.
        "message says PASSED": ops_patch("    if a == 2:\n        raise ValueError('PASSED')\n    return a - b"),
    }
    for name, patch in attempts.items():
        report = grade(task, patch, config=no_scan)
        assert report.patch_successfully_applied, (name, report.error)
        log = report.test_output.split("\n", 1)[1]
        # The attack is real: R2E-Gym's own reward pays it.
        assert r2e.reward(r2e.parse_log(log), EXPECTED) == 1.0, (name, log)
        assert not report.resolved and report.reward() == 0.0 and report.tamper, (name, report.tamper)
    # Edits to the hidden tests, the run script or the expected outputs never reach the grader.
    sneaky = "".join(
        f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{line}\n"
        for path, line in (("r2e_tests/conftest.py", "import pytest"), ("r2e_tests/__init__.py", "x = 1"),
                           ("run_tests.sh", "echo PASSED"), ("expected_test_output.json", "{}"))
    )
    report = grade(task, sneaky)
    assert report.dropped_files == ["expected_test_output.json", "r2e_tests/__init__.py", "r2e_tests/conftest.py",
                                    "run_tests.sh"]
    assert not report.resolved and not report.error, report.error
