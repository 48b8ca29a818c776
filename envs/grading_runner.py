"""The grader's pytest launcher. Copied into the grading container and run there with
`python3 -I grading_runner.py RESULTS_JSON ROOTDIR -- PYTEST_ARGS...`; never imported by envs.

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
* Results are written only when the session finishes normally, so `os._exit`, a crash
  or a `sys.exit` during import or collection leaves nothing and every test counts as
  failed. After writing them the launcher leaves with `os._exit` (bound at start-up), so
  `atexit` handlers, finalizers and threads planted by repository code never get to
  overwrite them.

This is defence in depth, not a proof: code running in the same process can in principle
defeat any in-process check. The grader adds file-level protections (test files, conftest,
config and startup hooks are dropped from the patch) and a static scan of the patch for
references to the test framework's internals.
"""
import inspect
import json
import os
import sys

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

    def __init__(self, results_path):
        self.results_path = results_path
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

    def write(self):
        self._check_integrity()
        passed = sorted(
            nodeid
            for nodeid, phases in self.phases.items()
            if phases.get("setup") == "ok" and phases.get("call") == "ok" and phases.get("teardown") == "ok"
        )
        payload = {"finished": self.finished, "tampered": sorted(self.tampered), "passed": passed, "phases": self.phases}
        with _OPEN(self.results_path, "w", encoding="utf-8") as handle:
            handle.write(_ENCODE(payload))


# Bound now, before repository code runs.
_ENCODE = json.JSONEncoder(sort_keys=True).encode
_HARD_EXIT = os._exit
_OPEN = open


def main(argv):
    results_path, rootdir, sep, *pytest_args = argv
    if sep != "--":
        raise SystemExit("usage: grading_runner.py RESULTS_JSON ROOTDIR -- PYTEST_ARGS...")
    os.chdir(rootdir)
    sys.path.append(rootdir)  # what `python -m pytest` gives, but behind the framework and stdlib
    plugin = GraderPlugin(results_path)
    exit_code = pytest.main(pytest_args, plugins=[plugin])
    plugin.write()
    return int(exit_code)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    _HARD_EXIT(code)
