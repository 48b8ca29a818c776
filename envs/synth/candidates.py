"""Checking mutation candidates: run the suite in a container and judge one bug.

The suite runs with the grader's command line and outcomes (`envs.pytest_protocol`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envs import pytest_protocol as protocol
from envs.pytest_protocol import Outcome
from envs.synth.mutations import Mutation

if TYPE_CHECKING:
    from envs.synth.pipeline import SynthConfig

WORKDIR = "/testbed"
JUNIT_PATH = "/tmp/agent-rl-synth-junit.xml"
LAUNCHER_PATH = "/tmp/agent-rl-synth-pytest-launcher.py"


@dataclass
class SuiteRun:
    """One run of the whole suite in a container."""

    outcomes: dict[str, Outcome]  # node id → outcome
    messages: dict[str, str]  # node id → failure (or skip) message
    collection_errors: list[str]
    timed_out: bool = False
    output: str = ""

    def passed(self, test: str) -> bool:
        """Did `test` plainly pass (not skipped, not xfail-marked)?"""
        return self.outcomes.get(test) is Outcome.PASSED


def suite_command(test_cmd: str) -> str:
    """The shell command that runs the whole suite in /testbed as the grader would."""
    run = protocol.shell_command(protocol.python_of(test_cmd), LAUNCHER_PATH, None, WORKDIR, JUNIT_PATH)
    return f"cd {WORKDIR} && rm -f {JUNIT_PATH} && {run}"


def run_suite(box: Any, test_cmd: str, timeout: float) -> SuiteRun:
    """Run the suite in `box` (which holds the launcher: `protocol.install_launcher(box, LAUNCHER_PATH)`)
    and parse its JUnit XML."""
    result = box.exec(suite_command(test_cmd), timeout=timeout)
    if result.timed_out:
        return SuiteRun({}, {}, [], timed_out=True, output=result.output[-2000:])
    junit = protocol.read_junit(box, JUNIT_PATH)
    if junit is None:  # pytest died before writing it
        return SuiteRun({}, {}, ["<no junit report>"], output=result.output[-2000:])
    return SuiteRun(junit.outcomes(), junit.messages(), junit.collection_errors, output=result.output[-2000:])


# --------------------------------------------------------------------------- candidates


@dataclass
class CheckedCandidate:
    """One mutation after its suite runs: the verdict and, when kept, its lists and failure messages."""

    mutation: Mutation
    outcome: str  # kept | no_failing_test | breaks_everything | collection_error | timeout | flaky | error
    fail_to_pass: list[str] = field(default_factory=list)
    pass_to_pass: list[str] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)


def check_candidate(box: Any, mutation: Mutation, original: str, baseline: set[str], config: "SynthConfig",
                    test_cmd: str) -> CheckedCandidate:
    """Apply `mutation` in `box`, run the suite (plus flaky re-runs), restore the tree, judge.

    Kept when some baseline test fails (FAIL_TO_PASS) and some still passes (PASS_TO_PASS);
    a baseline test the mutation turns skipped or xfail-marked is in neither list."""
    path = f"{WORKDIR}/{mutation.path}"
    try:
        box.write_file(path, mutation.apply(original))
        runs = [run_suite(box, test_cmd, config.test_timeout_s)]
        first = runs[0]
        if not first.timed_out and not first.collection_errors:
            for _ in range(config.flaky_reruns):
                runs.append(run_suite(box, test_cmd, config.test_timeout_s))
    except Exception as exc:  # a sandbox hiccup costs one candidate, not the run
        return CheckedCandidate(mutation, "error", messages={"": f"{type(exc).__name__}: {exc}"})
    finally:
        box.exec(f"cd {WORKDIR} && git checkout -q -- . && git clean -fdq", timeout=60)
    if first.timed_out:
        return CheckedCandidate(mutation, "timeout")
    if first.collection_errors:
        return CheckedCandidate(mutation, "collection_error")
    f2p, p2p = protocol.split_lists(first.outcomes, dict.fromkeys(baseline, Outcome.PASSED))
    if not f2p:
        return CheckedCandidate(mutation, "no_failing_test")
    if not p2p:
        return CheckedCandidate(mutation, "breaks_everything")
    for rerun in runs[1:]:
        if rerun.timed_out or any(rerun.outcomes.get(t) != first.outcomes.get(t) for t in baseline):
            return CheckedCandidate(mutation, "flaky")
    return CheckedCandidate(mutation, "kept", f2p, p2p, {t: first.messages.get(t, "") for t in f2p})
