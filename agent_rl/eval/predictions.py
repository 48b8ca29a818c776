"""Grade SWE-bench-format predictions: parse, pre-check, grade in fresh containers, report.

Input is SWE-bench's prediction format, `{instance_id, model_patch, model_name_or_path}`,
as JSONL, a JSON list, or a JSON object keyed by instance id. Whatever is wrong with one
prediction (a malformed line, an unknown id, a binary patch, a patch that does not apply)
is recorded for that prediction with a reason, and the rest of the run goes on.

The run report follows SWE-bench's `make_run_report`: counts and id lists for submitted,
completed, resolved, unresolved, empty-patch and error instances, plus the reasons.
"""
from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

REPORT_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Prediction:
    instance_id: str
    model_patch: str
    model_name_or_path: str
    where: str  # "line 3", "item 0", … for messages


@dataclass(frozen=True)
class ParseProblem:
    where: str
    reason: str
    instance_id: str | None = None


@dataclass
class ParsedPredictions:
    predictions: list[Prediction] = field(default_factory=list)
    problems: list[ParseProblem] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


class PredictionsFileError(ValueError):
    """The predictions file as a whole cannot be read (missing, not JSON/JSONL at all)."""


def _prediction_from_obj(obj: Any, where: str) -> Prediction | ParseProblem:
    if not isinstance(obj, Mapping):
        return ParseProblem(where, f"expected a JSON object, got {type(obj).__name__}")
    iid = obj.get("instance_id")
    if not isinstance(iid, str) or not iid.strip():
        return ParseProblem(where, "field instance_id is missing or not a non-empty string")
    patch = obj.get("model_patch", None)
    if "model_patch" not in obj:
        return ParseProblem(where, "field model_patch is missing", iid)
    if patch is None:
        patch = ""  # SWE-bench treats a null patch as an empty one
    if not isinstance(patch, str):
        return ParseProblem(where, f"field model_patch must be a string, got {type(patch).__name__}", iid)
    model = obj.get("model_name_or_path") or "unknown"
    if not isinstance(model, str):
        return ParseProblem(where, "field model_name_or_path must be a string", iid)
    return Prediction(iid, patch, model, where)


def parse_predictions_text(text: str) -> ParsedPredictions:
    """Parse predictions from JSONL, a JSON list or an id-keyed JSON object."""
    items: list[tuple[str, Any]] = []
    problems: list[ParseProblem] = []
    stripped = text.strip()
    whole: Any = None
    whole_ok = False
    if stripped.startswith(("[", "{")):
        try:
            whole = json.loads(stripped)
            whole_ok = True
        except json.JSONDecodeError:
            whole_ok = False  # maybe JSONL; parsed line by line below
    if whole_ok and isinstance(whole, list):
        items = [(f"item {i}", obj) for i, obj in enumerate(whole)]
    elif whole_ok and isinstance(whole, dict) and "instance_id" not in whole:
        # SWE-bench also accepts {instance_id: prediction}.
        for key, obj in whole.items():
            if isinstance(obj, dict) and "instance_id" not in obj:
                obj = {**obj, "instance_id": key}
            items.append((f"key {key!r}", obj))
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((f"line {lineno}", json.loads(line)))
            except json.JSONDecodeError as exc:
                problems.append(ParseProblem(f"line {lineno}", f"not valid JSON: {exc.msg} at column {exc.colno}"))
    parsed = ParsedPredictions(problems=problems)
    seen: dict[str, int] = {}
    for where, obj in items:
        result = _prediction_from_obj(obj, where)
        if isinstance(result, ParseProblem):
            parsed.problems.append(result)
            continue
        if result.instance_id in seen:
            # Like SWE-bench (predictions become a dict), the last one wins; we say so.
            parsed.duplicates.append(result.instance_id)
            parsed.predictions[seen[result.instance_id]] = result
        else:
            seen[result.instance_id] = len(parsed.predictions)
            parsed.predictions.append(result)
    return parsed


def load_predictions(path: str) -> ParsedPredictions:
    if not os.path.isfile(path):
        raise PredictionsFileError(f"predictions file not found: {path}")
    with open(path, encoding="utf-8", errors="replace") as fh:
        return parse_predictions_text(fh.read())


_BINARY_MARKERS = (
    re.compile(r"^GIT binary patch$", re.M),
    re.compile(r"^Binary files .* differ$", re.M),
)
_FILE_HEADER = re.compile(r"^(diff --git |--- |\+\+\+ )", re.M)


def precheck_patch(patch: str) -> str | None:
    """A reason the patch cannot be graded, found without a container; None if it may apply."""
    if "\x00" in patch:
        return "binary patch: contains NUL bytes; only text diffs can be graded"
    for marker in _BINARY_MARKERS:
        if marker.search(patch):
            return "binary patch: git binary diffs are not supported; only text diffs can be graded"
    if not _FILE_HEADER.search(patch):
        return "patch does not apply: not a unified diff (no 'diff --git' or '---'/'+++' file headers)"
    return None


def is_empty_patch(patch: str) -> bool:
    return not patch.strip()


# A grader takes (task, patch) and returns a SWE-bench-style report dict with at least
# `resolved` (bool); `patch_applied` False (or `error`) marks a patch that could not be run.
Grader = Callable[[Any, str], Mapping[str, Any]]


@dataclass
class InstanceOutcome:
    instance_id: str
    status: str  # resolved | unresolved | empty_patch | error
    reason: str = ""
    model_name_or_path: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    model_patch: str = ""  # kept beside the per-instance report, not inside it

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "status": self.status,
            "resolved": self.status == "resolved",
            "reason": self.reason,
            "model_name_or_path": self.model_name_or_path,
            "report": self.report,
        }


def _outcome_from_grade(pred: Prediction, report: Mapping[str, Any]) -> InstanceOutcome:
    report = dict(report)
    error = report.get("error")
    applied = report.get("patch_successfully_applied", report.get("patch_applied", True))
    if not applied:
        detail = str(error or report.get("apply_output") or "git apply failed").strip()
        return InstanceOutcome(pred.instance_id, "error", f"patch does not apply: {detail[:500]}",
                               pred.model_name_or_path, report)
    if error:
        return InstanceOutcome(pred.instance_id, "error", f"grading failed: {str(error)[:500]}",
                               pred.model_name_or_path, report)
    status = "resolved" if report.get("resolved") else "unresolved"
    return InstanceOutcome(pred.instance_id, status, "", pred.model_name_or_path, report)


def grade_one(pred: Prediction, task: Any, grader: Grader) -> InstanceOutcome:
    """Pre-check, then grade; every failure becomes an outcome with a reason."""
    outcome = _grade_checked(pred, task, grader)
    outcome.model_patch = pred.model_patch
    return outcome


def _grade_checked(pred: Prediction, task: Any, grader: Grader) -> InstanceOutcome:
    if is_empty_patch(pred.model_patch):
        return InstanceOutcome(pred.instance_id, "empty_patch", "model_patch is empty", pred.model_name_or_path)
    why = precheck_patch(pred.model_patch)
    if why:
        return InstanceOutcome(pred.instance_id, "error", why, pred.model_name_or_path)
    try:
        report = grader(task, pred.model_patch)
    except Exception as exc:  # one broken grade must not stop the run
        return InstanceOutcome(pred.instance_id, "error", f"grading failed: {type(exc).__name__}: {exc}",
                               pred.model_name_or_path)
    return _outcome_from_grade(pred, report)


def grade_predictions(
    parsed: ParsedPredictions,
    tasks: Mapping[str, Any],
    grader: Grader,
    workers: int = 1,
    on_done: Callable[[InstanceOutcome], None] | None = None,
) -> tuple[list[InstanceOutcome], dict[str, Any]]:
    """Grade every known prediction with `workers` threads; return outcomes and the run report."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    known = [p for p in parsed.predictions if p.instance_id in tasks]
    unknown = [p for p in parsed.predictions if p.instance_id not in tasks]

    def run(pred: Prediction) -> InstanceOutcome:
        outcome = grade_one(pred, tasks[pred.instance_id], grader)
        if on_done:
            on_done(outcome)
        return outcome

    if workers == 1:
        outcomes = [run(p) for p in known]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grade") as pool:
            outcomes = list(pool.map(run, known))
    return outcomes, make_run_report(tasks.keys(), parsed, unknown, outcomes)


def make_run_report(
    task_ids: Iterable[str],
    parsed: ParsedPredictions,
    unknown: Sequence[Prediction],
    outcomes: Sequence[InstanceOutcome],
) -> dict[str, Any]:
    by_status: dict[str, list[str]] = {"resolved": [], "unresolved": [], "empty_patch": [], "error": []}
    for o in outcomes:
        by_status[o.status].append(o.instance_id)
    submitted = sorted(o.instance_id for o in outcomes)
    completed = sorted(by_status["resolved"] + by_status["unresolved"])
    all_ids = sorted(task_ids)
    incomplete = sorted(set(all_ids) - set(completed))
    problems = [
        {"where": p.where, "instance_id": p.instance_id, "reason": p.reason} for p in parsed.problems
    ]
    problems += [
        {"where": p.where, "instance_id": p.instance_id, "reason": f"unknown instance id {p.instance_id!r}: not in the task set"}
        for p in unknown
    ]
    # An id whose only prediction was malformed was still meant as a submission: count it as an error.
    known_ids = set(all_ids)
    malformed_known = sorted(
        {p.instance_id for p in parsed.problems if p.instance_id in known_ids} - set(submitted)
    )
    error_ids = sorted(by_status["error"] + malformed_known)
    reasons = {o.instance_id: o.reason for o in outcomes if o.reason}
    for p in parsed.problems:
        if p.instance_id in malformed_known:
            reasons[p.instance_id] = f"malformed prediction ({p.where}): {p.reason}"
    submitted = sorted(set(submitted) | set(malformed_known))
    return {
        "total_instances": len(all_ids),
        "submitted_instances": len(submitted),
        "completed_instances": len(completed),
        "resolved_instances": len(by_status["resolved"]),
        "unresolved_instances": len(by_status["unresolved"]),
        "empty_patch_instances": len(by_status["empty_patch"]),
        "error_instances": len(error_ids),
        "unknown_instances": len(unknown),
        "malformed_predictions": len(parsed.problems),
        "submitted_ids": submitted,
        "completed_ids": completed,
        "incomplete_ids": incomplete,
        "resolved_ids": sorted(by_status["resolved"]),
        "unresolved_ids": sorted(by_status["unresolved"]),
        "empty_patch_ids": sorted(by_status["empty_patch"]),
        "error_ids": error_ids,
        "unknown_ids": sorted(p.instance_id for p in unknown),
        "duplicate_ids": sorted(set(parsed.duplicates)),
        "reasons": dict(sorted(reasons.items())),
        "problems": problems,
        "schema_version": REPORT_SCHEMA_VERSION,
    }


def safe_filename(instance_id: str) -> str:
    """Instance ids like 'owner__repo-123' are safe already; anything else is made so."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", instance_id).strip("._")
    return cleaned or "instance"


def write_grade_outputs(out_dir: str, outcomes: Sequence[InstanceOutcome], report: Mapping[str, Any]) -> None:
    """DIR/report.json plus DIR/instances/<id>/report.json (+ the patch), like SWE-bench's logs."""
    os.makedirs(out_dir, exist_ok=True)
    for o in outcomes:
        inst_dir = os.path.join(out_dir, "instances", safe_filename(o.instance_id))
        os.makedirs(inst_dir, exist_ok=True)
        with open(os.path.join(inst_dir, "report.json"), "w", encoding="utf-8") as fh:
            json.dump({o.instance_id: o.to_dict()}, fh, indent=2, default=str)
        with open(os.path.join(inst_dir, "patch.diff"), "w", encoding="utf-8") as fh:
            fh.write(o.model_patch)
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, default=str)


def official_instance_fields(outcome: InstanceOutcome) -> dict[str, Any] | None:
    """The instance's report.json fields as the official harness writes them, or None where the
    harness writes no report (an empty patch, a patch refused before any container ran)."""
    report = outcome.report
    if outcome.status == "empty_patch" or not report:
        return None
    applied = bool(report.get("patch_successfully_applied", report.get("patch_applied", True)))
    fields: dict[str, Any] = {"patch_is_None": False, "patch_exists": True, "patch_successfully_applied": applied,
                              "resolved": outcome.status == "resolved", "infra_failure": False}
    if applied and not report.get("error"):
        status = report.get("tests_status") or {}
        fields["tests_status"] = {kind: {"success": list((status.get(kind) or {}).get("success", [])),
                                         "failure": list((status.get(kind) or {}).get("failure", []))}
                                  for kind in ("FAIL_TO_PASS", "PASS_TO_PASS", "FAIL_TO_FAIL", "PASS_TO_FAIL")}
    return fields


def write_official_layout(out_dir: str, run_id: str, outcomes: Sequence[InstanceOutcome],
                          instance_ids: Sequence[str]) -> str | None:
    """The official harness's files beside ours, so tools that read them read a run of ours:
    DIR/logs/run_evaluation/<run_id>/<model>/<id>/report.json (+ test_output.txt) and the run
    summary DIR/<model>.<run_id>.json, computed from those files as the harness computes it.
    Returns the summary's path (None when nothing was submitted)."""
    from envs.swebench import report as official

    predictions: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        model = o.model_name_or_path or "agent-rl"
        predictions[o.instance_id] = {"instance_id": o.instance_id, "model_name_or_path": model,
                                      "model_patch": o.model_patch}
        fields = official_instance_fields(o)
        if fields is not None:
            output = o.report.get("test_output")
            official.write_instance_report(out_dir, run_id, model, {o.instance_id: fields},
                                           test_output=output if isinstance(output, str) else None)
    if not predictions:
        return None
    known = list(dict.fromkeys([*instance_ids, *predictions]))
    return str(official.write_run_report(out_dir, run_id, predictions, known))


def report_as_dict(report: Any) -> dict[str, Any]:
    """The grader may hand back a dict or a report object with `to_dict()`."""
    if isinstance(report, Mapping):
        return dict(report)
    to_dict = getattr(report, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise TypeError(f"grader returned {type(report).__name__}, expected a mapping or an object with to_dict()")


def container_grader(grading_config: Any = None) -> Grader:
    """The tamper-proof grader: every call grades in a fresh container from the task image."""
    from envs.grading import grade

    def run(task: Any, patch: str) -> dict[str, Any]:
        if grading_config is None:
            return report_as_dict(grade(task, patch))
        return report_as_dict(grade(task, patch, config=grading_config))

    return run


def grade_predictions_file(
    predictions_path: str,
    tasks_spec: str,
    out_dir: str,
    *,
    workers: int = 2,
    grader: Grader | None = None,
    on_done: Callable[[InstanceOutcome], None] | None = None,
    run_id: str = "agent-rl",
) -> dict[str, Any]:
    """Parse, grade and write DIR/report.json plus the per-instance reports, and the official
    harness's layout (`write_official_layout`); return the run report."""
    from envs.tasks import load_tasks

    parsed = load_predictions(predictions_path)
    tasks = {t.instance_id: t for t in load_tasks(tasks_spec)}
    outcomes, report = grade_predictions(parsed, tasks, grader or container_grader(), workers, on_done)
    known = [o for o in outcomes if o.instance_id in tasks]  # unknown ids have no dataset row to report on
    report["official_report"] = write_official_layout(out_dir, run_id, known, list(tasks))
    write_grade_outputs(out_dir, outcomes, report)
    return report
