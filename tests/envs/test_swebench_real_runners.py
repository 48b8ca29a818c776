"""Django's and SymPy's own test runners, in containers, through the SWE-bench loading path.

Each case takes the real project's release from PyPI (the sdist: Django's carries tests/ and
tests/runtests.py), makes it a git repository whose base commit carries a one-line bug, lays it
out as the official images are (/testbed, root-owned, dependencies installed; see
official_layout.py) and loads a SWE-bench-format row naming that image. Grading then runs the
repository's own runner in a fresh container, exactly the command SWE-bench runs for that
repository (`./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 <labels>`,
`bin/test -C --verbose <files>`): the gold patch resolves, the empty patch does not, and the
official harness's parser and report read the same in-container log as ours do.

SymPy's sdist ships no bin/: the repository gets a bin/test that hands SWE-bench's flags to the
legacy runner (`sympy.testing.runtests.test`, what SymPy's own bin/test drives). Django's
runtests.py is the real one.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from official_layout import official_style_image
from tinytask import git

from envs.grading import grade
from envs.swebench import log_grading, log_parsers, report, specs
from envs.tasks import load_tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SDIST_CACHE = Path(os.environ.get("AGENT_RL_SDIST_CACHE", "~/.cache/agent-rl/sdists")).expanduser()

SYMPY_BIN_TEST = '''#!/usr/bin/env python
"""SymPy's bin/test for the flags SWE-bench passes: -C (no cache), --verbose, test files."""
import os
import sys

args = sys.argv[1:]
if "-C" in args or "--no-cache" in args:
    os.environ["SYMPY_USE_CACHE"] = "no"  # read when sympy is first imported
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sympy.testing.runtests import test  # noqa: E402

paths = [arg for arg in args if not arg.startswith("-")]
sys.exit(0 if test(*paths, verbose="--verbose" in args or "-v" in args) else 1)
'''


@dataclass(frozen=True)
class Case:
    """One real project, one bug, one hidden test."""

    project: str  # the PyPI name
    repo: str  # the GitHub name SWE-bench rows carry
    bug: tuple[str, str, str]  # (file, correct text, buggy text)
    hidden_test: tuple[str, str, str]  # (test file, anchor line, text added before it)
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    packages: tuple[str, ...]  # dependencies copied into the image's site-packages
    extra_files: tuple[tuple[str, str], ...] = ()  # added to the base commit, executable


DJ = "utils_tests.test_text.TestUtilsText."
DJANGO = Case(
    project="django", repo="django/django",
    bug=("django/utils/text.py", "    return x[0].upper() + x[1:]\n", "    return x[0].upper() + x[1:].lower()\n"),
    hidden_test=(
        "tests/utils_tests/test_text.py", "    def test_get_text_list(self):\n",
        "    def test_capfirst_keeps_the_rest(self):\n"
        "        self.assertEqual(text.capfirst(\"hello World\"), \"Hello World\")\n\n",
    ),
    fail_to_pass=(f"test_capfirst_keeps_the_rest ({DJ}test_capfirst_keeps_the_rest)",),
    pass_to_pass=(f"test_get_text_list ({DJ}test_get_text_list)", f"test_get_valid_filename ({DJ}test_get_valid_filename)"),
    packages=("asgiref", "sqlparse"),
)
SYMPY = Case(
    project="sympy", repo="sympy/sympy",
    bug=("sympy/utilities/misc.py", "    if 11 <= k <= 13:\n", "    if 11 <= k <= 12:\n"),
    hidden_test=(
        "sympy/utilities/tests/test_misc.py", "def test_rawlines():\n",
        "def test_ordinal_teens():\n    assert ordinal(13) == '13th'\n    assert ordinal(113) == '113th'\n\n\n",
    ),
    fail_to_pass=("test_ordinal_teens",),
    pass_to_pass=("test_translate", "test_replace", "test_as_int"),
    packages=("mpmath",),
    extra_files=(("bin/test", SYMPY_BIN_TEST),),
)


def _sdist(project: str) -> Path:
    """The sdist of the release installed here (the dev extra pins the project), from PyPI once."""
    version = importlib.metadata.version(project)
    SDIST_CACHE.mkdir(parents=True, exist_ok=True)
    found = [p for p in SDIST_CACHE.glob("*.tar.gz") if p.name.lower() == f"{project}-{version}.tar.gz"]
    if found:
        return found[0]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         f"{project}=={version}", "--dest", str(SDIST_CACHE)],
        capture_output=True, text=True, timeout=600,
    )
    found = [p for p in SDIST_CACHE.glob("*.tar.gz") if p.name.lower() == f"{project}-{version}.tar.gz"]
    if done.returncode or not found:
        pytest.fail(f"could not fetch the {project} {version} sdist from PyPI: {done.stderr[-2000:]}")
    return found[0]


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: the release no longer has exactly one {old!r}"
    path.write_text(text.replace(old, new))


def _release_repo(tmp_path: Path, case: Case) -> dict:
    """The release as a git repository at a buggy base commit, with gold and test patches."""
    with tarfile.open(_sdist(case.project)) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    (top,) = (tmp_path / "src").iterdir()
    repo = tmp_path / case.project
    shutil.move(str(top), repo)
    for rel, content in case.extra_files:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(content)
        (repo / rel).chmod(0o755)
    path, correct, buggy = case.bug
    _replace_once(repo / path, correct, buggy)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    # No background `gc --auto` after this big commit: it would still be rewriting .git while
    # the image's archive is read.
    git(repo, "-c", "gc.auto=0", "commit", "-q", "-m", f"{case.project} release with a bug")
    base = git(repo, "rev-parse", "HEAD").strip()
    _replace_once(repo / path, buggy, correct)
    gold = git(repo, "diff")
    git(repo, "checkout", "-q", "--", ".")
    test_file, anchor, added = case.hidden_test
    _replace_once(repo / test_file, anchor, added + anchor)
    test_patch = git(repo, "diff")
    git(repo, "checkout", "-q", "--", ".")
    return {"repo": repo, "base_commit": base, "patch": gold, "test_patch": test_patch}


def _official_parse(repo: str, log: str) -> dict[str, str]:
    """The official harness's statuses for a log of `repo`'s runner."""
    from swebench.harness.log_parsers.python import MAP_REPO_TO_PARSER_PY

    return MAP_REPO_TO_PARSER_PY[repo](log, None)


@pytest.mark.parametrize("case", [DJANGO, SYMPY], ids=lambda case: case.project)
def test_real_runner_grades_gold_and_empty_in_containers(tmp_path: Path, monkeypatch, case: Case) -> None:
    from swebench.harness.grading import get_eval_tests_report

    from envs.task_images import MIN_FREE_DISK_ENV, task_image
    from sandboxes.docker import DockerSandbox

    monkeypatch.setenv(MIN_FREE_DISK_ENV, "0")
    made = _release_repo(tmp_path, case)
    image = official_style_image(
        made["repo"], f"agent-rl-test/{case.project}-official:{tmp_path.name[-12:].lower()}",
        packages=case.packages, importable=True,
    )
    version = ".".join(importlib.metadata.version(case.project).split(".")[:2])
    number = 90000 + len(case.project)
    row = {
        "instance_id": f"{case.repo.replace('/', '__')}-{number}", "repo": case.repo, "version": version,
        "base_commit": made["base_commit"], "problem_statement": f"a bug in {case.bug[0]}",
        "patch": made["patch"], "test_patch": made["test_patch"], "image_name": image,
        "FAIL_TO_PASS": json.dumps(list(case.fail_to_pass)), "PASS_TO_PASS": json.dumps(list(case.pass_to_pass)),
    }
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text(json.dumps(row) + "\n")
    (task,) = load_tasks(str(rows_file))
    spec = specs.for_task(task)
    assert log_grading.uses_log_runner(task) and spec.parser_name == case.project
    command = log_grading.test_command(task, spec)
    expected = {
        "django": "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 utils_tests.test_text",
        "sympy": "bin/test -C --verbose sympy/utilities/tests/test_misc.py",
    }[case.project]
    assert command == expected

    try:
        gold = grade(task, task.patch)
        assert gold.resolved, (gold.error, gold.tamper, gold.test_output[-3000:])
        assert gold.tests_status["FAIL_TO_PASS"]["success"] == list(case.fail_to_pass)
        assert gold.tests_status["PASS_TO_PASS"]["success"] == list(case.pass_to_pass)
        empty = grade(task, "")
        assert not empty.resolved and not empty.error, (empty.error, empty.test_output[-3000:])
        assert empty.tests_status["FAIL_TO_PASS"]["failure"] == list(case.fail_to_pass)
        assert empty.tests_status["PASS_TO_PASS"]["success"] == list(case.pass_to_pass)

        # The whole log of the same run (the report keeps only a tail), read by both harnesses.
        with DockerSandbox(task_image(task), {"workdir": "/testbed"}) as box:
            box.write_file("/tmp/test.patch", task.test_patch)
            applied = box.exec("git apply /tmp/test.patch", timeout=60)
            assert applied.exit_code == 0, applied.output
            activate = (task.env_activate or "").strip()
            run = box.exec(f"{activate} && {command}" if activate else command, timeout=600)
        assert run.exit_code != 0  # the hidden test fails on the buggy base
        ours, official = log_parsers.PARSERS[spec.parser_name](run.output), _official_parse(case.repo, run.output)
        assert ours == official
        assert ours[case.fail_to_pass[0]] == "FAILED"
        assert len(ours) >= len(case.pass_to_pass) + 1
        gold_lists = {"FAIL_TO_PASS": list(case.fail_to_pass), "PASS_TO_PASS": list(case.pass_to_pass)}
        assert report.tests_report(ours, *gold_lists.values()) == get_eval_tests_report(official, gold_lists)
    finally:
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True)
