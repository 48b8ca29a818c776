"""Tamper-proof grading: does the agent's patch make the hidden tests pass?

The steps, each a defence against a way of faking a pass:

1. **Filter the patch** (`envs.patch_screen`). Drop the agent's changes to anything that decides how tests run
   or what they check: files the hidden test patch touches, `tests/`/`test/` trees,
   `test_*.py` / `*_test.py`, every `conftest.py`, pytest configuration files
   (pytest.ini, tox.ini, setup.cfg, pyproject.toml), interpreter start-up hooks
   (sitecustomize.py, usercustomize.py, `*.pth`), modules shadowing the framework
   (pytest.py, _pytest/, pluggy/) and symlinks. Dropped files are listed in the report.
2. **Scan what is left.** Added lines in non-test files that reach for the test framework's
   internals (`_pytest`, `pluggy`, `TestReport`, JUnit, frame hacking…) make the patch
   score 0 (`GradingConfig.scan_patch`; off for repos that *are* test tooling).
3. **Fresh container.** A new sandbox from the clean task image: nothing the agent did at
   run time survives, and the image's git history stops at the base commit.
4. **Apply** the filtered patch (`git apply`, falling back to `patch -p1 --fuzz`), check
   that no protected file changed after all, then apply the hidden test patch.
5. **Run** only the target tests through `pytest_launcher.py` with the command line of
   `envs.pytest_protocol` (framework imported before repo code, repo config ignored, a
   trusted outcome-recording plugin, integrity checks), JUnit XML written outside the
   repository. The plugin's results come back on stdout framed by a per-run nonce that
   repository code never sees.
6. **Decide per test** from the JUnit XML *and* the plugin's record: a test passed only if
   both say so. Missing, failed, error, skipped, xfailed and timeout are failures (an
   xpassed test's body ran clean and passes: see `envs.pytest_protocol`); any tampering
   signal fails every test.

Tasks whose runner is not pytest (Django, SymPy, unittest) or that name a `log_parser` share
steps 1-4 and then run the repository's own test command and read its log the way the official
SWE-bench harness does (`envs.swebench.log_grading`, whose docstring says what replaces the
plugin there: grader-owned markers, the trusted exit status, a stricter scan). A task's
`env_activate` (e.g. the official images' conda activation) runs before the tests on both paths.

Native R2E-Gym tasks (`envs.swebench.r2e`) take a third path: the fresh container comes from
their grader's image (the agent's has no tests), the patch is screened with R2E's hidden paths
added, R2E's own run script runs and its log is read and rewarded as R2E-Gym does; that module's
docstring says which defences apply there and which cannot.

The report uses SWE-bench's keys, plus `fraction_passed`, timings, `error`, `dropped_files`
and `tamper`.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shlex
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from pydantic import Field

from envs import pytest_protocol as protocol
from envs.episode_sandboxes import SandboxFactory
from envs.patch_screen import filter_patch, hidden_test_files, protection_reason, scan_patch
from envs.swebench import log_grading, r2e
from envs.swebench import specs as swebench_specs
from envs.tasks import Task
from sandboxes.base import Sandbox
from sandboxes.docker import DockerSandboxConfig
from strictconfig import StrictModel


class GradingConfig(StrictModel):
    """How a patch is graded: the fresh grading container, time limits, patch screening."""

    config_where: ClassVar[str] = "grading"

    sandbox: DockerSandboxConfig = Field(default_factory=DockerSandboxConfig)
    """The grading container (same keys as env.sandbox); its workdir follows the task unless set."""
    test_timeout_s: float | None = Field(None, gt=0)
    """Seconds for the hidden tests; None: the task's own test_timeout_s."""
    apply_timeout_s: float = Field(60.0, gt=0)
    """Seconds to apply the patch."""
    scan_patch: bool = True
    """Reject patches that reach into the test framework (see the module docstring)."""
    fuzz: int = Field(3, ge=0)
    """`patch --fuzz` of the fallback apply."""


@dataclass
class GradeReport:
    """The verdict on one patch, in SWE-bench's report keys plus this grader's extras."""

    instance_id: str
    patch_is_None: bool = False
    patch_exists: bool = False
    patch_successfully_applied: bool = False
    resolved: bool = False
    tests_status: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: {k: {"success": [], "failure": []} for k in ("FAIL_TO_PASS", "PASS_TO_PASS")}
    )
    fraction_passed: float = 0.0  # every target test, F2P and P2P together: a diagnostic, not the reward
    error: str = ""
    dropped_files: list[str] = field(default_factory=list)
    tamper: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    test_output: str = ""  # tail of the test run's console output, for debugging

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def reward(self, kind: str = "binary") -> float:
        """1.0 when resolved; otherwise 0.0 ("binary") or `partial_credit()` ("fraction")."""
        if kind == "binary":
            return 1.0 if self.resolved else 0.0
        if kind == "fraction":
            return 1.0 if self.resolved else self.partial_credit()
        raise ValueError(f"unknown reward kind {kind!r}; expected 'binary' or 'fraction'")

    def partial_credit(self) -> float:
        """The fraction of FAIL_TO_PASS tests that pass, or 0.0 when any PASS_TO_PASS test fails.

        PASS_TO_PASS tests pass before any change, so counting them would pay an empty patch
        nearly full credit (63/66 on semvertools-001): only progress on the bug earns reward,
        and breaking working code forfeits it.
        """
        if self.tests_status["PASS_TO_PASS"]["failure"]:
            return 0.0
        f2p = self.tests_status["FAIL_TO_PASS"]
        total = len(f2p["success"]) + len(f2p["failure"])
        return len(f2p["success"]) / total if total else 0.0


# --------------------------------------------------------------------------------------
# 3–6. Running in a fresh container
# --------------------------------------------------------------------------------------


def default_sandbox_factory(sandbox_config: DockerSandboxConfig | Mapping[str, Any] | None = None) -> SandboxFactory:
    """Hardened Docker sandboxes started on demand from a DockerSandboxConfig (or its keys,
    validated now, not at first use); the workdir follows each task unless the config pins it.
    Used when `grade` is called without a factory; an episode runner passes its pool of pristine ones."""
    from envs.episode_sandboxes import EpisodeSandboxes

    return EpisodeSandboxes(grading_sandbox=sandbox_config).grader


def _test_command(task: Task, launcher: str, control: str, junit: str, files: list[str]) -> str:
    try:
        python = protocol.python_of(task.test_cmd)
    except protocol.NotPytestError as exc:
        raise GradingError(f"task {task.instance_id!r}: {exc}") from None
    command = protocol.shell_command(python, launcher, control, task.workdir, junit, files)
    if task.env_activate.strip():
        # The image's environment (e.g. conda's `testbed`) first; the launcher still runs
        # with `-I` and the protocol's environment, so the protections are unchanged.
        command = f"{task.env_activate.strip()} && cd {shlex.quote(task.workdir)} && {command}"
    return command


class GradingError(RuntimeError):
    """The task cannot be graded as written (not the agent's fault)."""


def _status_lists(report: GradeReport, task: Task, passed: set[str]) -> None:
    total = 0
    good = 0
    for kind, ids in (("FAIL_TO_PASS", task.FAIL_TO_PASS), ("PASS_TO_PASS", task.PASS_TO_PASS)):
        for test_id in ids:
            total += 1
            if test_id in passed:
                good += 1
                report.tests_status[kind]["success"].append(test_id)
            else:
                report.tests_status[kind]["failure"].append(test_id)
    report.fraction_passed = good / total if total else 0.0
    report.resolved = bool(total) and good == total


def grade(
    task: Task,
    patch: str | None,
    *,
    config: GradingConfig | Mapping[str, Any] | None = None,
    sandbox_factory: SandboxFactory | None = None,
    image: str | None = None,
) -> GradeReport:
    """Grade `patch` against `task`'s hidden tests in a fresh container. Never raises for
    anything the patch does; infrastructure failures land in `report.error`. `image`: the image
    to grade in (default: the task's); ignored for native R2E-Gym tasks, which are always
    graded in their grader's image (`envs.task_images.grading_image`), never the agent's."""
    config = GradingConfig.from_config(config)
    started = time.monotonic()
    report = GradeReport(instance_id=task.instance_id, patch_is_None=patch is None)
    report.patch_exists = bool(patch and patch.strip())
    try:
        _grade_into(report, task, patch or "", config, sandbox_factory, image)
    except Exception as exc:  # the report must always come back; say what broke
        report.error = report.error or f"{type(exc).__name__}: {exc}"
        report.resolved = False
    report.timings["total_s"] = round(time.monotonic() - started, 3)
    return report


async def agrade(task: Task, patch: str | None, **kwargs: Any) -> GradeReport:
    """`grade` without blocking the event loop (Docker calls run in a worker thread)."""
    from sandboxes.executor import run_blocking

    return await run_blocking(lambda: grade(task, patch, **kwargs))


def _grade_into(
    report: GradeReport,
    task: Task,
    patch: str,
    config: GradingConfig,
    sandbox_factory: SandboxFactory | None,
    image: str | None,
) -> None:
    if r2e.is_native_task(task):
        _grade_r2e_into(report, task, patch, config, sandbox_factory)
        return
    hidden = hidden_test_files(task)
    kept, report.dropped_files = filter_patch(patch, hidden)
    if config.scan_patch:
        report.tamper = scan_patch(kept)
    if image is None:
        from envs.task_images import task_image

        image = task_image(task)
    factory = sandbox_factory or default_sandbox_factory(config.sandbox)
    scratch = f"/tmp/agent-rl-grade-{uuid.uuid4().hex[:12]}"
    with factory(image, task) as box:
        box.exec(f"mkdir -p {scratch}", timeout=30)
        if not _apply_agent_patch(box, task, kept, scratch, config, report):
            _status_lists(report, task, set())
            return
        report.tamper += _changed_protected_files(box, task, hidden)
        if task.test_patch.strip():
            ok, why = _apply(box, task, task.test_patch, f"{scratch}/tests.patch", config, fallback=False)
            if not ok:
                raise GradingError(f"the hidden test patch does not apply: {why}")
        if log_grading.uses_log_runner(task):
            if config.scan_patch:
                report.tamper += log_grading.scan_for_log_runner(kept)
            _run_logged_tests(box, task, scratch, config, report)
            return
        passed = _run_tests(box, task, scratch, config, report)
    if report.tamper:
        passed = set()
    _status_lists(report, task, passed)


def _run_logged_tests(box: Sandbox, task: Task, scratch: str, config: GradingConfig, report: GradeReport) -> None:
    """Steps 5-6 for runners other than pytest: the repository's own test command, its log
    read by the SWE-bench parser, the verdict by `envs.swebench.report` (see
    `envs.swebench.log_grading` for what replaces the plugin). Fills `report`."""
    spec = swebench_specs.for_task(task)
    log_path = f"{scratch}/test_output.txt"  # outside the repository; only the runner writes it
    command = log_grading.test_command(task, spec)
    timeout = config.test_timeout_s or task.test_timeout_s
    timed = time.monotonic()
    run = box.exec(log_grading.shell_command(task, command, log_path), timeout=timeout)
    report.timings["test_s"] = round(time.monotonic() - timed, 3)
    try:
        output = box.read_file(log_path)
    except Exception:  # the runner never started (activation failed) or removed the file
        output = ""
    report.test_output = (output or run.output)[-4000:]
    if run.timed_out:
        report.error = f"tests timed out after {timeout:g}s"
        _status_lists(report, task, set())
        return
    report.tamper += log_grading.forged_markers(output)
    fields, why = log_grading.verdict(task, spec, output, run.exit_code)
    if why:
        report.error = report.error or f"{why} ({spec.parser_name} parser; command: {command})"
    if report.tamper or why:
        _status_lists(report, task, set())
        return
    status = fields["tests_status"]
    for kind in ("FAIL_TO_PASS", "PASS_TO_PASS"):
        report.tests_status[kind] = {"success": list(status[kind]["success"]), "failure": list(status[kind]["failure"])}
    good = sum(len(status[k]["success"]) for k in ("FAIL_TO_PASS", "PASS_TO_PASS"))
    counted = good + sum(len(status[k]["failure"]) for k in ("FAIL_TO_PASS", "PASS_TO_PASS"))
    report.fraction_passed = good / counted if counted else 0.0
    report.resolved = bool(fields["resolved"])


def _apply_agent_patch(box: Sandbox, task: Task, kept: str, scratch: str, config: GradingConfig,
                       report: GradeReport) -> bool:
    """The screened agent patch applied in the grader's container, timed; a failure's reason
    goes to `report.error`. Shared by the pytest/log path and the R2E path."""
    timed = time.monotonic()
    applied, why = _apply(box, task, kept, f"{scratch}/agent.patch", config)
    report.patch_successfully_applied = applied
    report.timings["apply_s"] = round(time.monotonic() - timed, 3)
    if not applied:
        report.error = why
    return applied


def _grade_r2e_into(
    report: GradeReport, task: Task, patch: str, config: GradingConfig, sandbox_factory: SandboxFactory | None
) -> None:
    """A native R2E-Gym task: steps 1-4 with R2E's hidden paths protected, in a fresh container
    of the grader's image; then R2E's run script, its log read and rewarded as R2E-Gym does
    (`envs.swebench.r2e.verdict`). Fills `report`."""
    from envs.task_images import grading_image

    kept, report.dropped_files = r2e.screen_patch(patch)
    if config.scan_patch:
        report.tamper = r2e.scan_patch(kept)
    expected = dict(task.extra["r2e"]["expected"])
    image = grading_image(task)
    factory = sandbox_factory or default_sandbox_factory(config.sandbox)
    scratch = f"/tmp/agent-rl-grade-{uuid.uuid4().hex[:12]}"
    with factory(image, task) as box:
        box.exec(f"mkdir -p {scratch}", timeout=30)
        stamp = f"{scratch}/before-apply"
        box.exec(f"touch {stamp} && sleep 0.01", timeout=30)
        if not _apply_agent_patch(box, task, kept, scratch, config, report):
            _r2e_status(report, task, r2e.Verdict(mismatched=list(r2e.normalize(expected))))
            return
        report.tamper += _r2e_changed_protected_files(box, task, stamp)
        prepared = box.exec(r2e.prepare_command(task), timeout=120)
        if not prepared.ok:
            raise GradingError(f"preparing the R2E-Gym test run failed: {prepared.output.strip()[-1000:]}")
        log_path = f"{scratch}/test_output.txt"  # outside the repository; only the runner writes it
        timeout = config.test_timeout_s or task.test_timeout_s
        timed = time.monotonic()
        run = box.exec(r2e.shell_command(task, log_path), timeout=timeout)
        report.timings["test_s"] = round(time.monotonic() - timed, 3)
        try:
            output = box.read_file(log_path)
        except Exception:  # the runner never started (activation failed) or removed the file
            output = ""
    if run.timed_out:
        report.error = f"tests timed out after {timeout:g}s"
        report.test_output = (output or run.output)[-4000:]
        _r2e_status(report, task, r2e.Verdict(mismatched=list(r2e.normalize(expected))))
        return
    verdict = r2e.verdict(expected, output, run.exit_code)
    report.tamper += verdict.tamper
    if verdict.why:
        report.error = f"the test log does not count as a run: {verdict.why}"
    report.test_output = (verdict.summary() + "\n" + r2e.clean_output(output or run.output)[-4000:])
    _r2e_status(report, task, verdict)
    report.resolved = verdict.reward == 1.0 and not report.tamper and not verdict.why


def _r2e_changed_protected_files(box: Sandbox, task: Task, stamp: str) -> list[str]:
    """Belt and braces after applying, for R2E's trees (a virtualenv and build outputs inside the
    repository: listing every ignored file would be huge): each file the apply wrote (newer than
    `stamp`, .git aside) must be one the agent may change."""
    result = box.exec(
        f"cd {shlex.quote(task.workdir)} && find . -path ./.git -prune -o \\( -type f -o -type l \\) "
        f"-newer {shlex.quote(stamp)} -print",
        timeout=120,
    )
    findings = []
    for line in result.output.splitlines():
        path = line.strip()[2:] if line.strip().startswith("./") else line.strip()
        if path and r2e.protection_reason(path):
            findings.append(f"{path}: protected file changed after applying the patch")
    return findings


def _r2e_status(report: GradeReport, task: Task, verdict: "r2e.Verdict") -> None:
    """tests_status from an R2E verdict: a FAIL_TO_PASS / PASS_TO_PASS key succeeds when it got
    its expected status (R2E's lists: statuses the fix changes / keeps)."""
    good = set(verdict.matched) if not (report.tamper or verdict.why) else set()
    for kind, ids in (("FAIL_TO_PASS", task.FAIL_TO_PASS), ("PASS_TO_PASS", task.PASS_TO_PASS)):
        report.tests_status[kind] = {"success": [t for t in ids if t in good], "failure": [t for t in ids if t not in good]}
    total = len(task.FAIL_TO_PASS) + len(task.PASS_TO_PASS)
    report.fraction_passed = len(good & {*task.FAIL_TO_PASS, *task.PASS_TO_PASS}) / total if total else 0.0
    report.resolved = False


def _git(cmd: str) -> str:
    # Never run repository-configured hooks, fsmonitor or external diff drivers.
    return f"git -c core.hooksPath=/dev/null -c core.fsmonitor=false {cmd}"


def _apply(
    box: Sandbox, task: Task, patch: str, path: str, config: GradingConfig, *, fallback: bool = True
) -> tuple[bool, str]:
    if not patch.strip():
        return True, ""
    box.write_file(path, patch if patch.endswith("\n") else patch + "\n")
    wd = shlex.quote(task.workdir)
    first = box.exec(
        f"cd {wd} && {_git('apply --binary --whitespace=nowarn')} {shlex.quote(path)}",
        timeout=config.apply_timeout_s,
    )
    if first.ok:
        return True, ""
    if not fallback:
        return False, first.output.strip()[-2000:]
    second = box.exec(
        f"cd {wd} && patch --batch --forward -p1 --fuzz={int(config.fuzz)} -i {shlex.quote(path)}",
        timeout=config.apply_timeout_s,
    )
    if second.ok:
        return True, ""
    return False, f"git apply: {first.output.strip()[-1000:]}\npatch: {second.output.strip()[-1000:]}"


def _changed_protected_files(box: Sandbox, task: Task, hidden: list[str]) -> list[str]:
    """Belt and braces after applying: no protected path may differ from the base commit."""
    result = box.exec(
        f"cd {shlex.quote(task.workdir)} && {_git('status --porcelain --untracked-files=all --ignored')}",
        timeout=60,
    )
    findings = []
    for line in result.output.splitlines():
        path = line[3:].split(" -> ")[-1].strip().strip('"')
        if path and protection_reason(path, hidden):
            findings.append(f"{path}: protected file changed after applying the patch")
    return findings


def _run_tests(box: Sandbox, task: Task, scratch: str, config: GradingConfig, report: GradeReport) -> set[str]:
    targets = [*task.FAIL_TO_PASS, *task.PASS_TO_PASS]
    files = sorted({t.split("::")[0] for t in targets})
    launcher = f"{scratch}/pytest_launcher.py"
    control = f"{scratch}/control.json"
    junit_path = f"{scratch}/junit.xml"
    nonce = uuid.uuid4().hex
    protocol.install_launcher(box, launcher)
    box.write_file(control, json.dumps({"nonce": nonce, "targets": targets}))
    timeout = config.test_timeout_s or task.test_timeout_s
    timed = time.monotonic()
    run = box.exec(_test_command(task, launcher, control, junit_path, files), timeout=timeout)
    report.timings["test_s"] = round(time.monotonic() - timed, 3)
    plugin = protocol.results_from_output(run.output, nonce)
    report.test_output = re.sub(rf"{nonce}<.*?>{nonce}", "", run.output)[-4000:]
    if run.timed_out:
        report.error = f"tests timed out after {timeout:g}s"
        return set()
    junit = protocol.read_junit(box, junit_path)
    if plugin is None or junit is None:
        report.error = report.error or "the test run produced no results (crash, exit or collection error)"
        return set()
    if not plugin.get("finished"):
        report.error = "the test session did not finish"
        return set()
    report.tamper += [f"test framework modified at run time: {name}" for name in plugin.get("tampered", [])]
    plugin_passed = set(plugin.get("passed", []))
    missing = [t for t in targets if t not in set(plugin.get("ran", []))]
    if missing:
        report.error = f"{len(missing)} of {len(targets)} target tests did not run (collection error, crash or exit)"
    passed = set()
    for test_id in targets:
        result = junit.result(test_id)
        # Skipped and xfailed targets never pass; an xpassed one ran clean (envs.pytest_protocol).
        by_junit = result is not None and result.outcome.passes_grading
        if test_id in plugin_passed and by_junit:
            passed.add(test_id)
        elif by_junit and test_id not in plugin_passed:
            report.tamper.append(f"{test_id}: JUnit says passed but the grader's plugin did not see it pass")
    return passed
