"""How every test run in envs calls pytest and reads its results: grading, synthesis, refresh.

One command line for all three. pytest runs through `pytest_launcher.py` (framework imported
before repository code, repository root appended to `sys.path`, `python -I`), with:

* the repository's pytest configuration ignored (`-c /dev/null -o addopts=`), its conftest.py
  files still found (`--rootdir`/`--confcutdir` at the repository root);
* no plugins but pytest's own (`PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`, `PYTEST_PLUGINS` and
  `PYTEST_ADDOPTS` emptied), no cache, no bytecode, no user site;
* JUnit XML in the xunit1 family (which carries each test's `file`), labelled by the launcher
  with each test's node id and with `xpassed` where JUnit alone would say "passed".

The XML becomes one explicit outcome per test (`Outcome`). What the outcomes mean:

=========  =====================================  ==============================  ===========
outcome    pytest                                 FAIL_TO_PASS / PASS_TO_PASS     graded test
=========  =====================================  ==============================  ===========
passed     ran, nothing raised                    counts as a pass                passes
failed     the test body failed (incl. a strict   counts as a failure; blocks a   fails
           xfail that passed: XPASS(strict))      base commit / gold state
error      setup or teardown raised (a module     as failed                       fails
           that does not import is listed apart,
           as a collection error)
skipped    `pytest.mark.skip*`, `unittest.skip*`  neither: never selected, never  fails
           `pytest.skip()`                        blocks synthesis or refresh
xfailed    xfail-marked and failed                neither (as skipped)            fails
xpassed    xfail-marked (non-strict) and passed   neither (as skipped)            passes
=========  =====================================  ==============================  ===========

Why xpassed is neither for selection but a pass when graded: a non-strict xfail marker says
the project accepts either result from that test, so requiring it to pass (PASS_TO_PASS) would
punish a patch the project considers fine, and its failing (FAIL_TO_PASS) says nothing about a
bug. Selection therefore never picks an xfail-marked test. If a graded target turns out to be
xfail-marked (lists from elsewhere, or a marker whose condition reads library code), its body
did run to the end without raising, which is what pytest's exit code and the grader's own
plugin count as a pass; skipped and xfailed bodies did not, so those never pass.
"""
from __future__ import annotations

import enum
import json
import os
import re
import shlex
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sandboxes.base import Sandbox

LAUNCHER_SOURCE = Path(__file__).with_name("pytest_launcher.py")
NODE_ID_PROPERTY = "agent_rl.nodeid"  # the launcher's labels (kept in step with pytest_launcher.py)
OUTCOME_PROPERTY = "agent_rl.outcome"

# Set for every run. Empty PYTEST_ADDOPTS / PYTEST_PLUGINS count as unset for pytest.
ENV: dict[str, str] = {
    "PYTHONNOUSERSITE": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    "PYTEST_ADDOPTS": "",
    "PYTEST_PLUGINS": "",
}
JUNIT_FAMILY = "xunit1"


class Outcome(str, enum.Enum):
    """One test's result. The string values are what reports and lists show."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"

    @property
    def is_failure(self) -> bool:
        """failed or error: the suite itself says something is wrong."""
        return self in (Outcome.FAILED, Outcome.ERROR)

    @property
    def is_neutral(self) -> bool:
        """skipped, xfailed, xpassed: neither a pass nor a failure for FAIL_TO_PASS/PASS_TO_PASS."""
        return self in (Outcome.SKIPPED, Outcome.XFAILED, Outcome.XPASSED)

    @property
    def passes_grading(self) -> bool:
        """The test body ran to the end without raising (see the module doc for xpassed)."""
        return self in (Outcome.PASSED, Outcome.XPASSED)


# When one test has several JUnit entries (a failed call and then a teardown error), the worst wins.
_RANK = {o: i for i, o in enumerate((Outcome.PASSED, Outcome.XPASSED, Outcome.XFAILED, Outcome.SKIPPED,
                                     Outcome.FAILED, Outcome.ERROR))}


@dataclass(frozen=True)
class TestResult:
    """One test's outcome, the message pytest gave for it (failure, skip or xfail reason) and
    its node id ("" when the XML does not say: no launcher label and no `file` attribute)."""

    __test__ = False  # not a pytest test class, whatever its name

    outcome: Outcome
    message: str = ""
    node_id: str = ""


@dataclass
class JUnitReport:
    """A parsed JUnit XML: every test keyed the way pytest's JUnit writer names it, plus the
    modules that failed to collect."""

    cases: dict[tuple[str, str], TestResult] = field(default_factory=dict)
    collection_errors: list[str] = field(default_factory=list)

    def result(self, node_id: str) -> TestResult | None:
        """The result of the test with this pytest node id, or None if it did not run."""
        return self.cases.get(junit_key(node_id))

    def outcomes(self) -> dict[str, Outcome]:
        """{node id: outcome} of every test whose node id is known."""
        return {r.node_id: r.outcome for r in self.cases.values() if r.node_id}

    def messages(self) -> dict[str, str]:
        """{node id: message} of every test with a known node id and a message."""
        return {r.node_id: r.message for r in self.cases.values() if r.node_id and r.message}


def junit_key(node_id: str) -> tuple[str, str]:
    """(classname, name) as pytest's JUnit writer derives them from a node id."""
    path, bracket, params = node_id.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def _node_id_from_file(case: ET.Element) -> str:
    # Without the launcher's label: xunit1's `file` plus the classes in `classname`. Wrong only
    # for a test defined in another file than the one it is collected from (inherited tests).
    file, classname, name = case.get("file"), case.get("classname", ""), case.get("name", "")
    if not file:
        return ""
    module = file[:-3].replace("/", ".") if file.endswith(".py") else file
    inner = classname[len(module) + 1:] if classname.startswith(module + ".") else ""
    return "::".join([file, *inner.split("."), name]) if inner else f"{file}::{name}"


def _case_outcome(case: ET.Element, labels: Mapping[str, str]) -> tuple[Outcome, str]:
    for child in case:
        if child.tag in ("failure", "error", "skipped"):
            message = child.get("message") or ((child.text or "").strip().splitlines() or [""])[-1]
            if child.tag == "failure":
                return Outcome.FAILED, message
            if child.tag == "error":
                return Outcome.ERROR, message
            return (Outcome.XFAILED if child.get("type") == "pytest.xfail" else Outcome.SKIPPED), message
    return (Outcome.XPASSED if labels.get(OUTCOME_PROPERTY) == "xpassed" else Outcome.PASSED), ""


def parse_junit(xml_text: str) -> JUnitReport:
    """Parse pytest's JUnit XML into one explicit outcome per test (raises ET.ParseError on
    garbage). A module that failed to import is a collection error, not a test."""
    report = JUnitReport()
    for case in ET.fromstring(xml_text).iter("testcase"):
        labels = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        outcome, message = _case_outcome(case, labels)
        key = (case.get("classname", ""), case.get("name", ""))
        if outcome is Outcome.ERROR and message == "collection failure":
            report.collection_errors.append(case.get("file") or key[1])
            continue
        node_id = labels.get(NODE_ID_PROPERTY) or _node_id_from_file(case)
        seen = report.cases.get(key)
        if seen is not None:
            node_id = node_id or seen.node_id
            if _RANK[outcome] <= _RANK[seen.outcome]:
                outcome = seen.outcome
            message = seen.message or message
        report.cases[key] = TestResult(outcome, message, node_id)
    return report


def split_lists(buggy: Mapping[str, Outcome], fixed: Mapping[str, Outcome]) -> tuple[list[str], list[str]]:
    """(FAIL_TO_PASS, PASS_TO_PASS) from the outcomes of the buggy and the fixed state.

    Only tests that plainly pass in the fixed state are candidates. FAIL_TO_PASS: fails (or
    errors, or did not run because its module broke) in the buggy state; PASS_TO_PASS: passes
    there too. A test that is skipped, xfailed or xpassed in either state is in neither list.
    """
    fail_to_pass: list[str] = []
    pass_to_pass: list[str] = []
    for test, outcome in fixed.items():
        if outcome is not Outcome.PASSED:
            continue
        before = buggy.get(test, Outcome.ERROR)
        if before is Outcome.PASSED:
            pass_to_pass.append(test)
        elif before.is_failure:
            fail_to_pass.append(test)
    return sorted(fail_to_pass), sorted(pass_to_pass)


# --------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------


class NotPytestError(ValueError):
    """A test command that is not `pytest` / `PYTHON -m pytest`."""


def python_of(test_cmd: str) -> str:
    """The interpreter of a `python3 -m pytest` / `pytest` style command; NotPytestError otherwise."""
    argv = shlex.split(test_cmd)
    if not argv or argv[-1] != "pytest" or not (len(argv) == 1 or argv[-2] == "-m"):
        raise NotPytestError(f"test_cmd {test_cmd!r} is not pytest; tests run as 'python3 -m pytest' style commands only")
    return argv[0] if len(argv) >= 3 else "python3"


def pytest_args(rootdir: str, junit_path: str, files: Sequence[str] = ()) -> list[str]:
    """pytest's own arguments: which config, which outputs, which files (all when empty)."""
    return [
        "-p", "no:cacheprovider",
        "-o", "addopts=",
        "-c", "/dev/null",  # ignore the repository's pytest configuration entirely
        "--rootdir", rootdir,
        "--confcutdir", rootdir,  # -c /dev/null would otherwise hide the repo's own conftest.py files
        f"--junitxml={junit_path}",
        "-o", f"junit_family={JUNIT_FAMILY}",
        "-q",
        "--tb=short",  # keeps the output (capped by sandboxes) small; results come from the XML
        *files,
    ]  # fmt: skip


def launcher_argv(python: str, launcher: str, control: str | None, rootdir: str, junit_path: str,
                  files: Sequence[str] = ()) -> list[str]:
    """The full argv: `PYTHON -I LAUNCHER CONTROL|- ROOTDIR -- PYTEST_ARGS...`."""
    return [python, "-I", launcher, control or "-", rootdir, "--", *pytest_args(rootdir, junit_path, files)]


def shell_command(python: str, launcher: str, control: str | None, rootdir: str, junit_path: str,
                  files: Sequence[str] = ()) -> str:
    """`launcher_argv` as one shell command with `ENV` set, for `Sandbox.exec`."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in ENV.items())
    argv = launcher_argv(python, launcher, control, rootdir, junit_path, files)
    return f"env {env} {' '.join(shlex.quote(a) for a in argv)}"


# --------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------


def install_launcher(box: Sandbox, path: str) -> None:
    """Copy the launcher into a sandbox at `path`."""
    box.write_file(path, LAUNCHER_SOURCE.read_text(encoding="utf-8"))


def read_junit(box: Sandbox, path: str) -> JUnitReport | None:
    """The parsed JUnit XML at `path` in the sandbox, or None when it is missing or garbled."""
    try:
        return parse_junit(box.read_file(path))
    except Exception:  # pytest died before writing it, or something wrote garbage
        return None


@dataclass
class LocalRun:
    """A pytest run on this machine: the parsed XML (None if pytest wrote none) and its output."""

    junit: JUnitReport | None
    exit_code: int
    output: str


def run_local(rootdir: str | os.PathLike[str], *, python: str, timeout: float,
              files: Sequence[str] = ()) -> LocalRun:
    """Run the tests in `rootdir` with `python` the way the grader runs them in a container.
    Raises subprocess.TimeoutExpired past `timeout` seconds."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # -I ignores it; don't pass it on
    env.update(ENV)
    with tempfile.TemporaryDirectory(prefix="agent-rl-junit-") as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = launcher_argv(python, str(LAUNCHER_SOURCE), None, str(rootdir), str(junit), files)
        proc = subprocess.run(argv, cwd=rootdir, env=env, capture_output=True, text=True, timeout=timeout)
        parsed = parse_junit(junit.read_text(encoding="utf-8")) if junit.is_file() else None
    return LocalRun(parsed, proc.returncode, proc.stdout + proc.stderr)


def results_from_output(output: str, nonce: str) -> dict[str, Any] | None:
    """The launcher's grading record: the one JSON object framed by this run's nonce, else None."""
    frames = re.findall(rf"{re.escape(nonce)}<(.*?)>{re.escape(nonce)}", output)
    if len(frames) != 1:
        return None
    try:
        data = json.loads(frames[0])
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def describe(outcomes: Iterable[Outcome]) -> str:
    """'181 passed, 2 skipped' style summary (outcomes in a fixed order, zeros left out)."""
    counts = {o: 0 for o in Outcome}
    for outcome in outcomes:
        counts[outcome] += 1
    return ", ".join(f"{n} {o.value}" for o, n in counts.items() if n) or "no tests"
