"""The pytest launcher behind every test run: grading, synthesis and suite refresh.

Copied into the container (or run from the source tree) with
`python3 -I pytest_launcher.py CONTROL_JSON|- ROOTDIR -- PYTEST_ARGS...`; never imported by
envs. `envs/pytest_protocol.py` builds that command and parses what comes back. The grader
passes a control file; synthesis and refresh pass `-` (no nonce, no results frame) and read
only the JUnit XML.

Every run labels the JUnit XML for the parser (as testcase properties): the exact pytest
node id of each test, which the XML's `file`/`classname` cannot give for inherited tests,
and `xpassed` for an xfail-marked test that passed, which JUnit otherwise writes as a plain
pass. The labels are never used to decide that a graded test passed.

Why a launcher instead of `python -m pytest`:

* The framework is imported *first*, before any repository code can run, and the
  repository root is appended to (not put in front of) `sys.path`. Repository files
  cannot shadow `pytest`, `_pytest`, `pluggy` or the standard library, and `-I` keeps
  PYTHONPATH, PYTHONSTARTUP, the user site and the current directory out.
* A trusted plugin records each test's outcome itself: it wraps the setup, call and
  teardown hooks and looks at the exception each phase raised, without going through
  `TestReport`, the reporting hooks or JUnit. The grader then requires that this record
  and the JUnit XML agree that a test passed.
* Before and after every test the plugin compares the framework's key functions with
  the objects it saw at start-up; any monkeypatching of pytest internals by library code
  marks the whole run as tampered, which scores 0.
* Results are printed only when the session finishes normally, so `os._exit`, a crash
  or a `sys.exit` during import or collection leaves nothing and every test counts as
  failed. They are framed by a nonce that the grader hands over in a control file which
  the launcher deletes before any repository code runs, so lines printed by repository
  code (or by a process it left running) cannot pass for results. Afterwards the launcher
  leaves with `os._exit` (bound at start-up): `atexit` handlers and finalizers planted by
  repository code never run.

This is defence in depth, not a proof: code running in the same process can in principle
defeat any in-process check. The grader adds file-level protections (test files, conftest,
config and startup hooks are dropped from the patch) and a static scan of the patch for
references to the test framework's internals.
"""
import inspect
import json
import os
import sys

# `-I` ignores PYTHONDONTWRITEBYTECODE: without this, a module rewritten to the same size
# within a second (synthesis's mutations, refresh's gold patch) could run from a stale .pyc.
sys.dont_write_bytecode = True

import _pytest.fixtures
import _pytest.junitxml
import _pytest.main
import _pytest.python
import _pytest.reports
import _pytest.runner
import _pytest.skipping
import pluggy
import pytest

_WATCHED = [
    (_pytest.runner, "call_and_report"),
    (_pytest.runner, "call_runtest_hook"),
    (_pytest.runner, "runtestprotocol"),
    (_pytest.runner, "pytest_runtest_makereport"),
    (_pytest.runner.CallInfo, "from_call"),
    (_pytest.reports.TestReport, "__init__"),
    (_pytest.reports.TestReport, "from_item_and_call"),
    (_pytest.reports.TestReport, "passed"),
    (_pytest.reports.TestReport, "failed"),
    (_pytest.reports.TestReport, "skipped"),
    (_pytest.reports.TestReport, "_to_json"),
    (_pytest.python.Function, "runtest"),
    (_pytest.python, "pytest_pyfunc_call"),
    (_pytest.skipping, "pytest_runtest_makereport"),
    (_pytest.junitxml.LogXML, "pytest_runtest_logreport"),
    (_pytest.junitxml.LogXML, "pytest_sessionfinish"),
    (_pytest.junitxml._NodeReporter, "append_pass"),
    (_pytest.junitxml._NodeReporter, "to_xml"),
    (_pytest.main.Session, "perform_collect"),
    (pluggy.PluginManager, "register"),
    (json, "dump"),
    (json, "dumps"),
    (os, "_exit"),
    (sys, "exit"),
]


_getattr_static = inspect.getattr_static


def _snapshot():
    # Static lookup: sees a property or method replaced anywhere along the MRO without calling it.
    return [_getattr_static(owner, name, None) for owner, name in _WATCHED]


class GraderPlugin:
    """Records phase outcomes from the hook wrappers and watches for monkeypatching."""

    def __init__(self):
        self.baseline = _snapshot()
        self.phases = {}
        self.tampered = set()
        self.finished = False

    def _check_integrity(self):
        for (owner, name), before, now in zip(_WATCHED, self.baseline, _snapshot()):
            if before is not now:
                self.tampered.add(f"{getattr(owner, '__name__', owner)}.{name}")

    def _record(self, item, phase, outcome):
        excinfo = outcome.excinfo
        status = "ok" if excinfo is None else type(excinfo[1]).__name__
        self.phases.setdefault(item.nodeid, {})[phase] = status

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item):
        self._check_integrity()
        outcome = yield
        self._record(item, "setup", outcome)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item):
        outcome = yield
        self._record(item, "call", outcome)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item):
        outcome = yield
        self._record(item, "teardown", outcome)
        self._check_integrity()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session):
        self._check_integrity()
        self.finished = True

    def summary(self, targets):
        """Per target test: did setup, call and teardown all complete without an exception?"""
        self._check_integrity()
        return {
            "finished": self.finished,
            "tampered": sorted(self.tampered),
            "ran": [t for t in targets if t in self.phases],
            "passed": [
                t
                for t in targets
                if all(self.phases.get(t, {}).get(phase) == "ok" for phase in ("setup", "call", "teardown"))
            ],
        }


NODE_ID_PROPERTY = "agent_rl.nodeid"
OUTCOME_PROPERTY = "agent_rl.outcome"


class JUnitLabels:
    """Adds the node id and the xpass label to each test's JUnit entry (see module doc)."""

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()  # outermost wrapper: the skipping plugin has had its say
        if report.when == "setup":
            item.user_properties.append((NODE_ID_PROPERTY, item.nodeid))
        elif report.when == "call" and report.passed and hasattr(report, "wasxfail"):
            item.user_properties.append((OUTCOME_PROPERTY, "xpassed"))


# Bound now, before repository code runs.
_ENCODE = json.JSONEncoder(sort_keys=True).encode
_DECODE = json.JSONDecoder().decode
_HARD_EXIT = os._exit
_WRITE = os.write
_UNLINK = os.unlink
_OPEN = open


def _read_control(path):
    """The grader's nonce and target test ids. The file is deleted before any repository
    code runs, so only this process knows the nonce that authenticates its results."""
    with _OPEN(path, encoding="utf-8") as handle:
        control = _DECODE(handle.read())
    _UNLINK(path)
    return control["nonce"], control["targets"]


def main(argv):
    control_path, rootdir, sep, *pytest_args = argv
    if sep != "--":
        raise SystemExit("usage: pytest_launcher.py CONTROL_JSON|- ROOTDIR -- PYTEST_ARGS...")
    nonce, targets = _read_control(control_path) if control_path != "-" else (None, [])
    os.chdir(rootdir)
    sys.path.append(rootdir)  # what `python -m pytest` gives, but behind the framework and stdlib
    plugin = GraderPlugin()
    exit_code = pytest.main(pytest_args, plugins=[plugin, JUnitLabels()])
    if nonce is not None:
        # Results go to stdout between nonce markers, not to a file that a process left behind
        # by repository code could rewrite before the grader reads it.
        _WRITE(1, f"\n{nonce}<{_ENCODE(plugin.summary(targets))}>{nonce}\n".encode("ascii"))
    return int(exit_code)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    _HARD_EXIT(code)
