"""One evaluation log → (statuses, whether the run counts), as the official harness judges it.

The official eval script brackets the test run with markers and, after the end marker, records
the test command's exit status. A log counts as a run of the patched tests only when no failure
marker appears (patch did not apply, reset failed, tests errored or timed out), both markers do,
the parser finds results (or the output shows a suite ran), and a non-zero exit status comes with
at least one failing test (a patch can print fake "PASSED" lines; it cannot easily also fake the
exit status). A log that does not count grades as "patch not applied" with no test results.

`infra_failure_reason` is the harness's advisory triage of such logs (environment faults vs
ambiguous ones): it never changes `resolved`.
"""
from __future__ import annotations

import re

from envs.swebench.log_parsers import ERROR, FAILED, Parser, StatusMap

# The eval script's markers (swebench.harness.constants); tools grep logs for these exact texts.
APPLY_PATCH_FAIL = ">>>>> Patch Apply Failed"
APPLY_PATCH_PASS = ">>>>> Applied Patch"
RESET_FAILED = ">>>>> Reset Failed"
TESTS_ERROR = ">>>>> Tests Errored"
TESTS_TIMEOUT = ">>>>> Tests Timed Out"
START_TEST_OUTPUT = ">>>>> Start Test Output"
END_TEST_OUTPUT = ">>>>> End Test Output"
TEST_EXIT_CODE = ">>>>> Test Exit Code"
# Any of these anywhere in the log: the tests did not run on the patched tree.
BAD_MARKERS = (APPLY_PATCH_FAIL, RESET_FAILED, TESTS_ERROR, TESTS_TIMEOUT)

_EXIT_CODE = re.compile(rf"{re.escape(TEST_EXIT_CODE)}:\s*(-?\d+)")

# Summary lines proving a runner executed at least one test, for parsers that record only
# failures (JavaScript runners): an empty status map with one of these is "ran clean", without
# one it is "never ran". Every count must be non-zero ("Executed 0 of 0" is a runner that died).
SUITE_RAN = re.compile(
    r"Executed [1-9]\d* of \d+"
    r"|TOTAL: [1-9]\d* (?:SUCCESS|FAILED)"
    r"|[1-9]\d* passing"
    r"|Tests:\s+[1-9]\d*"
    r"|Test Suites:\s+(?:\d+ \w+, )*[1-9]\d* total"
    r"|^# tests [1-9]\d*"
    r"|[1-9]\d* specs?, \d+ failures?"
    r"|': ok$",
    re.M,
)

# (reason, tier, pattern): the harness's signatures of broken environments, first match wins.
# "environment": cannot come from a patch; "ambiguous": could come from either.
ENVIRONMENT = "environment"
AMBIGUOUS = "ambiguous"
INFRA_SIGNATURES: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (reason, tier, re.compile(pattern, re.M))
    for reason, tier, pattern in (
        ("browser_launch_failed", ENVIRONMENT, r"Failed to launch|Failed to connect to the bus"),
        ("display_unavailable", ENVIRONMENT, r"cannot open display|Missing X server|unable to open X display"),
        ("out_of_memory", ENVIRONMENT, r"Cannot allocate memory|OutOfMemoryError|^Killed$"),
        ("container_unavailable", ENVIRONMENT, r"Error response from daemon|Cannot connect to the Docker daemon"),
        ("network_unreachable", ENVIRONMENT, r"Could not resolve host|Temporary failure in name resolution"),
        ("missing_module", AMBIGUOUS, r"Cannot find module|MODULE_NOT_FOUND|ModuleNotFoundError"),
        ("no_tests_collected", AMBIGUOUS, r"no tests ran|collected 0 items"),
        ("tests_timed_out", AMBIGUOUS, r"Timeout error: \d+ seconds exceeded"),
    )
)


def recorded_exit_code(log: str) -> int | None:
    """The test command's exit status the eval script recorded, or None when absent."""
    match = _EXIT_CODE.search(log)
    return int(match.group(1)) if match else None


def marked_output(log: str) -> str | None:
    """The text between the start and end markers, or None when either is missing."""
    if START_TEST_OUTPUT not in log or END_TEST_OUTPUT not in log:
        return None
    return log.split(START_TEST_OUTPUT)[1].split(END_TEST_OUTPUT)[0]


def read_eval_log(log: str, parser: Parser) -> tuple[StatusMap, bool]:
    """(statuses, counts) for a whole eval log; ({}, False) when the run does not count."""
    if any(marker in log for marker in BAD_MARKERS):
        return {}, False
    inside = marked_output(log)
    if inside is None:
        return {}, False
    # Some runners' results land outside the markers (stdout/stderr interleaving): then the
    # whole log is read.
    statuses = parser(inside) or parser(log)
    if not statuses and not SUITE_RAN.search(log):
        return {}, False
    code = recorded_exit_code(log)
    if code not in (None, 0) and statuses and not any(s in (FAILED, ERROR) for s in statuses.values()):
        return {}, False  # the runner failed yet the log claims nothing failed: not this run's log
    return statuses, True


def infra_failure(*logs: str) -> tuple[str, str] | None:
    """(reason, tier) of the first matching signature in the logs joined, or None."""
    text = "\n".join(logs)
    if not text:
        return None
    for reason, tier, pattern in INFRA_SIGNATURES:
        if pattern.search(text):
            return reason, tier
    return None
