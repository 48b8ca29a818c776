"""Grading from a test runner's log: the pure half (which tasks, which command, what verdict).

`envs.grading` runs pytest tasks through its trusted launcher and plugin. That protection
needs pytest; Django's runtests.py, SymPy's bin/test and plain unittest cannot load it. Tasks
whose runner is not pytest, and every task that names a `log_parser`, are graded as the
official harness grades them: run the repository's own test command on the test files of the
hidden test patch, read the log with `envs.swebench.log_parsers`, decide with
`envs.swebench.report`. `envs.grading` does the container part (fresh container, patch
screening, agent patch, protected-file check, test patch last) exactly as for pytest.

What replaces the in-process plugin here, and what each defence stops:

* **The grader owns the markers.** The official eval script prints ">>>>> Start Test Output"
  / ">>>>> End Test Output" / ">>>>> Test Exit Code" from the same shell as the tests, so code
  under test could print them too. Here the test command runs alone in its own `exec` with its
  output sent to a file; the grader writes the markers around that output itself, after the
  run. Any official marker text *inside* the runner's output can only be a forgery: it is a
  tamper finding and scores 0 (`forged_markers`).
* **The exit status comes from the trusted shell**, not from the log (the sandbox server reports
  the subshell's status). `eval_log.read_eval_log` then refuses a run whose runner failed while
  the log claims nothing failed (fake "ok" lines printed by a patch cannot also fake the status).
* **Results only from the runner's own output**, read from a file in the grader's scratch
  directory (outside the repository), never from files the repository writes elsewhere; a run
  that timed out, produced no file, or whose log shows no results does not count (every
  target fails).
* **A stricter static scan** of the screened patch for log runners (`scan_for_log_runner`):
  added lines with result-like string literals ("... ok", "PASSED "), calls into unittest's
  result machinery (addSuccess, wasSuccessful, unittest.result, …), grabs of the real output
  streams (sys.__stdout__) or the marker prefix are tamper findings, on top of
  `patch_screen.scan_patch` (which already flags os._exit and frame hacking). Narrow on
  purpose, since a false positive fails a real fix; off with `grading.scan_patch`.

Residual risk (as in the official harness): code under test can still write status-like lines
to its own stdout at run time (e.g. built from pieces the scan does not see). Parsers keep a
test's *last* status, and unittest-style runners repeat every failure in their closing summary
("FAIL: name"), which the unittest parser reads last; Django's and SymPy's parsers do not have
that property. Treat non-pytest grading as parity with the official harness plus the defences
above, not as the plugin's guarantee.
"""
from __future__ import annotations

import re
import shlex
from typing import Any, Mapping, Sequence

from envs.swebench import eval_log, report, specs
from envs.swebench.specs import LogSpec

# swebench.harness.constants.NON_TEST_EXTS: files a test patch touches that are not test targets.
NON_TEST_EXTS = (".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml")
DEFAULT_TEST_CMD = "python3 -m pytest"  # Task.test_cmd's default: "use the runner's own command"
_DIFF_TARGET = re.compile(r"^diff --git a/.* b/(.*)$", re.M)

# Every marker the official eval script writes: none may come from the runner's output.
GRADER_MARKERS = (
    eval_log.START_TEST_OUTPUT, eval_log.END_TEST_OUTPUT, eval_log.TEST_EXIT_CODE,
    eval_log.APPLY_PATCH_PASS, *eval_log.BAD_MARKERS,
)

# Narrow on purpose: a false positive scores a real fix 0 (and SWE-bench 5 rows name a parser for
# every repository, so pytest repositories come this way too). Off with `grading.scan_patch`.
LOG_RUNNER_TAMPER_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\.\.\.\s*(?:ok|OK|FAIL|ERROR|skipped)\b|['\"](?:PASSED|XFAIL|FAILED|ERROR) ", "writes test-result text"),
    (r"\b(?:addSuccess|addFailure|addError|addSkip|addExpectedFailure|wasSuccessful|_TextTestResult)\b"
     r"|\bunittest\.(?:result|runner|signals)\b",
     "reaches into the test runner's result machinery"),
    (r"\bsys\.__stdout__\b|\bsys\.__stderr__\b", "takes over the process's real output streams"),
    (r">>>>>", "writes the grader's marker prefix"),
)


def has_explicit_parser(task: Any) -> bool:
    extra = getattr(task, "extra", None) or {}
    return bool(extra.get("log_parser"))


def uses_log_runner(task: Any) -> bool:
    """True for tasks graded from the runner's log: an explicit `log_parser`, or a repository
    whose runner is not pytest (Django, SymPy, unittest). Everything else keeps the pytest
    launcher and plugin."""
    if has_explicit_parser(task):
        return True
    return specs.for_task(task).family.name != "pytest"


def test_files(task: Any) -> list[str]:
    """The files the hidden test patch touches that are tests (as the harness picks them),
    then the task's own `test_files`."""
    touched = _DIFF_TARGET.findall(getattr(task, "test_patch", "") or "")
    files = [f.strip() for f in touched if not f.strip().endswith(NON_TEST_EXTS)]
    return list(dict.fromkeys([*files, *(getattr(task, "test_files", None) or [])]))


def _targets_from_ids(spec: LogSpec, ids: Sequence[str]) -> list[str]:
    """Runner targets from test ids when the test patch names no test file: "file::name" →
    the file; unittest-style "name (module.Class)" → "module.Class.name"."""
    out = []
    for test_id in ids:
        if "::" in test_id:
            out.append(spec.family.target(test_id.split("::")[0]))
            continue
        match = re.fullmatch(r"(\w+) \(([\w.]+)\)", test_id.strip())
        if match:
            name, where = match.groups()
            out.append(where if where.endswith("." + name) else f"{where}.{name}")
    return list(dict.fromkeys(out))


def test_command(task: Any, spec: LogSpec) -> str:
    """The runner's command with its targets: the task's `test_cmd` when it was set, else the
    runner family's command; targets from the test patch's files (the harness's choice), else
    from the FAIL_TO_PASS / PASS_TO_PASS ids."""
    base = (getattr(task, "test_cmd", "") or "").strip()
    if not base or base == DEFAULT_TEST_CMD:
        base = shlex.join(spec.family.command)
    files = test_files(task)
    targets = spec.targets(files) if files else _targets_from_ids(spec, [*task.FAIL_TO_PASS, *task.PASS_TO_PASS])
    return f"{base} {shlex.join(targets)}".strip()


def shell_command(task: Any, command: str, log_path: str) -> str:
    """The one command the grader executes: activation and the runner in a subshell whose
    whole output goes to `log_path`; the exec's exit status is the runner's."""
    workdir = shlex.quote(task.workdir)
    activate = (getattr(task, "env_activate", "") or "").strip()
    inner = f"{activate} && cd {workdir} && {command}" if activate else f"cd {workdir} && {command}"
    return f"cd {workdir} && ( {inner} ) > {shlex.quote(log_path)} 2>&1"


def forged_markers(output: str) -> list[str]:
    """Findings for official marker text inside the runner's own output."""
    return [f"the test output contains the grader's marker {marker!r}" for marker in GRADER_MARKERS if marker in output]


def scan_for_log_runner(patch: str) -> list[str]:
    """Tamper findings for added lines that could fake a text log's verdict (see the module doc)."""
    from envs.patch_screen import split_patch

    findings: list[str] = []
    for section in split_patch(patch):
        path = section.paths[-1] if section.paths else "?"
        added = [l[1:] for l in section.text.splitlines() if l.startswith("+") and not l.startswith("+++ ")]
        body = "\n".join(added)
        for pattern, why in LOG_RUNNER_TAMPER_PATTERNS:
            match = re.search(pattern, body)
            if match:
                findings.append(f"{path}: {why} ({match.group(0)!r})")
    return findings


def official_log(output: str, exit_code: int) -> str:
    """The runner's output framed as the official eval log (markers written by the grader)."""
    return (
        f"{eval_log.APPLY_PATCH_PASS}\n{eval_log.START_TEST_OUTPUT}\n{output.rstrip()}\n"
        f"{eval_log.END_TEST_OUTPUT}\n{eval_log.TEST_EXIT_CODE}: {exit_code}\n"
    )


def verdict(task: Any, spec: LogSpec, output: str, exit_code: int) -> tuple[dict[str, Any], str]:
    """(the official per-instance report fields, why the run does not count or "") for the
    runner's output and exit status. `eval_type` comes from the task (SWE-bench 5 rows carry it)."""
    log = official_log(output, exit_code)
    statuses, counts = eval_log.read_eval_log(log, spec.parser)
    extra: Mapping[str, Any] = getattr(task, "extra", None) or {}
    eval_type = extra.get("eval_type") or report.PASS_AND_FAIL
    fields = report.instance_report(
        task.instance_id, "<graded>", statuses if counts else None, task.FAIL_TO_PASS, task.PASS_TO_PASS,
        eval_type=eval_type, infra_failure=None if counts else eval_log.infra_failure(log),
    )[task.instance_id]
    if counts:
        return fields, ""
    parsed = spec.parse(output)
    if not output.strip():
        why = "the test run wrote no output"
    elif parsed and exit_code != 0 and not any(s in ("FAILED", "ERROR") for s in parsed.values()):
        why = f"the runner exited {exit_code} yet its log shows no failing test"
    else:
        why = f"the {spec.parser_name} parser found no test results in the runner's output (exit {exit_code})"
    return fields, f"the test log does not count as a run: {why}"
