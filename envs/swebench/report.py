"""Statuses + FAIL_TO_PASS / PASS_TO_PASS → the official harness's report, and its files.

The semantics, as `swebench.harness.grading` has them:

* A FAIL_TO_PASS test succeeds when its status is PASSED or XFAIL; it fails when it is FAILED,
  ERROR, SKIPPED or missing from the log. A PASS_TO_PASS test also succeeds when SKIPPED (a
  skip is not a regression). Any other word a parser recorded puts the test in neither list,
  so it does not count at all.
* An id cut inside its parameters ("test_x[a(b") matches the log's full ids that start with
  it, when those all agree on pass/fail (SWE-bench Verified ships ~700 such ids).
* Resolution: the share of successes among each list's counted tests (an empty list counts as
  1). FULL when both shares are 1, PARTIAL when FAIL_TO_PASS is strictly between 0 and 1 and
  PASS_TO_PASS is 1, NO otherwise. `resolved` is FULL.
* Per instance (report.json): `patch_is_None`, `patch_exists` (any non-None patch, even empty),
  `patch_successfully_applied` (the eval log counts, see `envs.swebench.eval_log`), `resolved`,
  `infra_failure` (+ `infra_failure_reason`) and `tests_status` with all four lists
  (FAIL_TO_FAIL / PASS_TO_FAIL stay empty unless asked for).

`evaluate` mirrors `get_eval_report` on a log's text; `instance_report` builds the same dict from
statuses a grader already has. `write_instance_report` and `write_run_report` lay the files out
as `swebench.harness.run_evaluation` does, so tools reading the official layout read ours.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from envs.swebench import eval_log
from envs.swebench.log_parsers import ERROR, FAILED, PASSED, SKIPPED, XFAIL, Parser, StatusMap

FAIL_TO_PASS = "FAIL_TO_PASS"
PASS_TO_PASS = "PASS_TO_PASS"
FAIL_TO_FAIL = "FAIL_TO_FAIL"
PASS_TO_FAIL = "PASS_TO_FAIL"

RESOLVED_FULL = "RESOLVED_FULL"
RESOLVED_PARTIAL = "RESOLVED_PARTIAL"
RESOLVED_NO = "RESOLVED_NO"

PASS_AND_FAIL = "pass_and_fail"  # eval types: every target must be seen passing
FAIL_ONLY = "fail_only"  # only a recorded FAILED fails (runners whose parser records failures only)

# The official on-disk layout: RUN_DIR/<run_id>/<model>/<instance_id>/REPORT_FILE
RUN_DIR = Path("logs/run_evaluation")
REPORT_FILE = "report.json"
TEST_OUTPUT_FILE = "test_output.txt"
INSTANCE_LOG_FILE = "run_instance.log"

_PASSING = (PASSED, XFAIL)
_FAILING = (FAILED, ERROR, SKIPPED)


def _lookup(test: str, statuses: Mapping[str, str]) -> str | None:
    """The status-map key for `test`: itself, or for an id cut inside its parameters (more
    "[" than "]"), the first key it prefixes when all such keys agree on passing or not."""
    if test in statuses:
        return test
    if test.count("[") > test.count("]"):
        matches = [key for key in statuses if key.startswith(test)]
        if matches and len({statuses[key] in _PASSING for key in matches}) == 1:
            return matches[0]
    return None


def passed(test: str, statuses: Mapping[str, str]) -> bool:
    key = _lookup(test, statuses)
    return key is not None and statuses[key] in _PASSING


def maintained(test: str, statuses: Mapping[str, str]) -> bool:
    """PASS_TO_PASS success: passed, or skipped."""
    key = _lookup(test, statuses)
    return passed(test, statuses) or (key is not None and statuses[key] == SKIPPED)


def failed(test: str, statuses: Mapping[str, str]) -> bool:
    key = _lookup(test, statuses)
    return key is None or statuses[key] in _FAILING


def _split(tests: Iterable[str], statuses: Mapping[str, str], *, skip_ok: bool, eval_type: str) -> dict[str, list[str]]:
    success: list[str] = []
    failure: list[str] = []
    for test in tests:
        if eval_type == FAIL_ONLY:
            (failure if statuses.get(test) == FAILED else success).append(test)
        elif (maintained if skip_ok else passed)(test, statuses):
            success.append(test)
        elif failed(test, statuses):
            failure.append(test)
        # else: a status outside the vocabulary: the test is in neither list (not counted)
    return {"success": success, "failure": failure}


def tests_report(
    statuses: Mapping[str, str],
    fail_to_pass: Sequence[str],
    pass_to_pass: Sequence[str],
    *,
    fail_to_fail: Sequence[str] = (),
    pass_to_fail: Sequence[str] = (),
    calculate_to_fail: bool = False,
    eval_type: str = PASS_AND_FAIL,
) -> dict[str, dict[str, list[str]]]:
    """The `tests_status` block: per list, which tests succeeded and which failed."""
    if eval_type not in (PASS_AND_FAIL, FAIL_ONLY):
        raise ValueError(f"unknown eval_type {eval_type!r}; expected {PASS_AND_FAIL!r} or {FAIL_ONLY!r}")
    to_fail = calculate_to_fail  # judged like FAIL_TO_PASS (a pass is extra credit); else empty
    return {
        FAIL_TO_PASS: _split(fail_to_pass, statuses, skip_ok=False, eval_type=eval_type),
        PASS_TO_PASS: _split(pass_to_pass, statuses, skip_ok=True, eval_type=eval_type),
        FAIL_TO_FAIL: _split(fail_to_fail if to_fail else (), statuses, skip_ok=False, eval_type=eval_type),
        PASS_TO_FAIL: _split(pass_to_fail if to_fail else (), statuses, skip_ok=False, eval_type=eval_type),
    }


def _share(lists: Mapping[str, list[str]]) -> float:
    total = len(lists["success"]) + len(lists["failure"])
    return len(lists["success"]) / total if total else 1.0


def resolution_status(report: Mapping[str, Mapping[str, list[str]]]) -> str:
    """RESOLVED_FULL, RESOLVED_PARTIAL or RESOLVED_NO for a `tests_status` block."""
    f2p = _share(report[FAIL_TO_PASS])
    p2p = _share(report[PASS_TO_PASS])
    if f2p == 1 and p2p == 1:
        return RESOLVED_FULL
    if 0 < f2p < 1 and p2p == 1:
        return RESOLVED_PARTIAL
    return RESOLVED_NO


def instance_report(
    instance_id: str,
    patch: str | None,
    statuses: StatusMap | None,
    fail_to_pass: Sequence[str],
    pass_to_pass: Sequence[str],
    *,
    eval_type: str = PASS_AND_FAIL,
    include_tests_status: bool = True,
    infra_failure: tuple[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """{instance_id: fields} as in the official report.json. `statuses` None means the run
    does not count (the patch did not apply, or the log shows no valid run): then nothing is
    graded and `infra_failure` (reason, tier) may say why."""
    fields: dict[str, Any] = {
        "patch_is_None": False,
        "patch_exists": False,
        "patch_successfully_applied": False,
        "resolved": False,
        "infra_failure": False,
    }
    report = {instance_id: fields}
    if patch is None:
        fields["patch_is_None"] = True
        return report
    fields["patch_exists"] = True  # the harness means "not None": an empty patch "exists"
    if statuses is None:
        if infra_failure:
            reason, tier = infra_failure
            fields["infra_failure"] = tier == eval_log.ENVIRONMENT
            fields["infra_failure_reason"] = reason
        return report
    fields["patch_successfully_applied"] = True
    status = tests_report(statuses, fail_to_pass, pass_to_pass, eval_type=eval_type)
    fields["resolved"] = resolution_status(status) == RESOLVED_FULL
    if include_tests_status:
        fields["tests_status"] = status
    return report


def evaluate(
    instance_id: str,
    patch: str | None,
    log: str,
    parser: Parser,
    fail_to_pass: Sequence[str],
    pass_to_pass: Sequence[str],
    *,
    eval_type: str = PASS_AND_FAIL,
    include_tests_status: bool = True,
) -> dict[str, dict[str, Any]]:
    """The official per-instance report for a whole eval log (markers included) read by `parser`."""
    if patch is None:
        return instance_report(instance_id, None, None, fail_to_pass, pass_to_pass)
    statuses, counts = eval_log.read_eval_log(log, parser)
    return instance_report(
        instance_id,
        patch,
        statuses if counts else None,
        fail_to_pass,
        pass_to_pass,
        eval_type=eval_type,
        include_tests_status=include_tests_status,
        infra_failure=None if counts else eval_log.infra_failure(log),
    )


# --------------------------------------------------------------------------------------
# Files in the official layout
# --------------------------------------------------------------------------------------


def _model_dir(model_name_or_path: str) -> str:
    return model_name_or_path.replace("/", "__")


def instance_dir(root: str | os.PathLike[str], run_id: str, model_name_or_path: str, instance_id: str) -> Path:
    """ROOT/logs/run_evaluation/<run_id>/<model, "/" → "__">/<instance_id>."""
    return Path(root) / RUN_DIR / run_id / _model_dir(model_name_or_path) / instance_id


def write_instance_report(
    root: str | os.PathLike[str],
    run_id: str,
    model_name_or_path: str,
    report: Mapping[str, Mapping[str, Any]],
    *,
    test_output: str | None = None,
) -> Path:
    """Write one instance's report.json (and its test output, when given) where the official
    harness would; returns the report's path."""
    (instance_id,) = report  # one instance per report.json
    where = instance_dir(root, run_id, model_name_or_path, instance_id)
    where.mkdir(parents=True, exist_ok=True)
    if test_output is not None:
        (where / TEST_OUTPUT_FILE).write_text(test_output, encoding="utf-8")
    path = where / REPORT_FILE
    path.write_text(json.dumps(report, indent=4), encoding="utf-8")
    return path


def run_report(
    root: str | os.PathLike[str],
    run_id: str,
    predictions: Mapping[str, Mapping[str, Any]],
    instance_ids: Sequence[str],
) -> dict[str, Any]:
    """The run summary the official harness writes, read from the per-instance files under
    `root` (as the harness reads them). `predictions`: instance_id → {"model_name_or_path",
    "model_patch", …}; `instance_ids`: the whole dataset's ids."""
    completed, resolved, unresolved, errors, incomplete, empty = (set() for _ in range(6))
    for instance_id in instance_ids:
        prediction = predictions.get(instance_id)
        if prediction is None:
            incomplete.add(instance_id)
            continue
        if prediction.get("model_patch") in ("", None):
            empty.add(instance_id)
            continue
        path = instance_dir(root, run_id, prediction["model_name_or_path"], instance_id) / REPORT_FILE
        if not path.exists():
            errors.add(instance_id)
            continue
        completed.add(instance_id)
        try:
            content = path.read_text().strip()
            if not content:
                errors.add(instance_id)
                continue
            (resolved if json.loads(content)[instance_id]["resolved"] else unresolved).add(instance_id)
        except (json.JSONDecodeError, KeyError):
            errors.add(instance_id)

    # Advisory triage of what did not resolve; these ids stay unresolved/errors.
    reasons: dict[str, str] = {}
    infra, ambiguous = set(), set()
    for instance_id in unresolved | errors:
        where = instance_dir(root, run_id, predictions[instance_id]["model_name_or_path"], instance_id)
        logs = [
            path.read_text(errors="replace")
            for path in (where / TEST_OUTPUT_FILE, where / INSTANCE_LOG_FILE)
            if path.exists()
        ]
        found = eval_log.infra_failure(*logs)
        if found:
            reasons[instance_id] = found[0]
            (infra if found[1] == eval_log.ENVIRONMENT else ambiguous).add(instance_id)

    return {
        "total_instances": len(instance_ids),
        "submitted_instances": len(predictions),
        "completed_instances": len(completed),
        "resolved_instances": len(resolved),
        "unresolved_instances": len(unresolved),
        "infra_failure_instances": len(infra),
        "ambiguous_failure_instances": len(ambiguous),
        "empty_patch_instances": len(empty),
        "error_instances": len(errors),
        "completed_ids": sorted(completed),
        "incomplete_ids": sorted(incomplete),
        "empty_patch_ids": sorted(empty),
        "submitted_ids": sorted(predictions),
        "resolved_ids": sorted(resolved),
        "unresolved_ids": sorted(unresolved),
        "infra_failure_ids": sorted(infra),
        "ambiguous_failure_ids": sorted(ambiguous),
        "failure_reasons": dict(sorted(reasons.items())),
        "error_ids": sorted(errors),
        "schema_version": 2,
    }


def write_run_report(
    root: str | os.PathLike[str],
    run_id: str,
    predictions: Mapping[str, Mapping[str, Any]],
    instance_ids: Sequence[str],
    report_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write `run_report` as `<model>.<run_id>.json` in `report_dir` (default `root`), the
    official summary file's name; returns its path."""
    if not predictions:
        raise ValueError("no predictions: the summary file is named after the first prediction's model")
    summary = run_report(root, run_id, predictions, instance_ids)
    model = next(iter(predictions.values()))["model_name_or_path"]
    out = Path(report_dir if report_dir is not None else root)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{_model_dir(model)}.{run_id}.json"
    path.write_text(json.dumps(summary, indent=4) + "\n", encoding="utf-8")
    return path
