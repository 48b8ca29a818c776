"""Predictions parsing, patch pre-checks and the run report (no containers: the real
grading run is in test_grade_real.py)."""
from __future__ import annotations

import json

import pytest

from agent_rl.eval.predictions import (
    PredictionsFileError,
    grade_predictions,
    load_predictions,
    parse_predictions_text,
    precheck_patch,
)

GOOD = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n"


def test_jsonl_with_malformed_lines_is_parsed_line_by_line() -> None:
    text = "\n".join([
        json.dumps({"instance_id": "t1", "model_patch": GOOD, "model_name_or_path": "m"}),
        "{not json",
        json.dumps({"model_patch": GOOD}),
        json.dumps({"instance_id": "t2", "model_patch": 3}),
        json.dumps({"instance_id": "t3", "model_patch": None}),
        json.dumps([1, 2]),
        "",
    ])
    parsed = parse_predictions_text(text)
    assert [(p.instance_id, p.model_patch) for p in parsed.predictions] == [("t1", GOOD), ("t3", "")]
    reasons = {p.where: p.reason for p in parsed.problems}
    assert reasons["line 2"].startswith("not valid JSON")
    assert "instance_id is missing" in reasons["line 3"]
    assert "model_patch must be a string, got int" in reasons["line 4"]
    assert "expected a JSON object, got list" in reasons["line 6"]
    assert [p.instance_id for p in parsed.problems if p.where == "line 4"] == ["t2"]


def test_json_list_and_id_keyed_object_and_duplicates() -> None:
    as_list = json.dumps([{"instance_id": "a", "model_patch": "x"}, {"instance_id": "a", "model_patch": "y"}])
    parsed = parse_predictions_text(as_list)
    assert [(p.instance_id, p.model_patch) for p in parsed.predictions] == [("a", "y")]
    assert parsed.duplicates == ["a"]
    keyed = parse_predictions_text(json.dumps({"a": {"model_patch": "x", "model_name_or_path": "m"}}))
    assert keyed.predictions[0].instance_id == "a" and keyed.predictions[0].model_name_or_path == "m"
    single = parse_predictions_text(json.dumps({"instance_id": "b", "model_patch": ""}))
    assert single.predictions[0].instance_id == "b"


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(PredictionsFileError, match="not found"):
        load_predictions(str(tmp_path / "nope.jsonl"))


def test_precheck_names_binary_and_non_diff_patches() -> None:
    assert precheck_patch(GOOD) is None
    binary = "diff --git a/img.png b/img.png\nGIT binary patch\nliteral 5\nHcmV?d00001\n"
    assert precheck_patch(binary).startswith("binary patch")
    assert precheck_patch("diff --git a/b b/b\nBinary files a/b and b/b differ\n").startswith("binary patch")
    assert "not a unified diff" in precheck_patch("please fix the bug, thanks")


def test_run_report_counts_and_reasons_with_a_grader_double() -> None:
    text = "\n".join(json.dumps(d) for d in [
        {"instance_id": "ok", "model_patch": GOOD},
        {"instance_id": "bad", "model_patch": GOOD},
        {"instance_id": "noapply", "model_patch": GOOD},
        {"instance_id": "empty", "model_patch": "  \n"},
        {"instance_id": "ghost", "model_patch": GOOD},
        {"instance_id": "junk", "model_patch": "garbage"},
        {"instance_id": "boom", "model_patch": GOOD},
        {"instance_id": "typed", "model_patch": ["x"]},
    ])
    # The double's "tasks" are their own ids, so the grader can script per instance.
    tasks = {i: i for i in ["ok", "bad", "noapply", "empty", "junk", "boom", "typed", "untouched"]}

    def grader(iid: str, patch: str) -> dict:
        if iid == "boom":
            raise RuntimeError("container died")
        if iid == "noapply":
            return {"resolved": False, "patch_successfully_applied": False, "error": "error: patch failed: x.py:1"}
        return {"resolved": iid == "ok", "patch_successfully_applied": True}

    outcomes, report = grade_predictions(parse_predictions_text(text), tasks, grader, workers=3)
    assert report["total_instances"] == 8
    assert report["resolved_ids"] == ["ok"]
    assert report["unresolved_ids"] == ["bad"]
    assert report["completed_ids"] == ["bad", "ok"]
    assert report["empty_patch_ids"] == ["empty"]
    assert report["error_ids"] == ["boom", "junk", "noapply", "typed"]
    assert report["unknown_ids"] == ["ghost"]
    assert report["submitted_instances"] == 7
    assert "untouched" in report["incomplete_ids"]
    assert report["reasons"]["noapply"].startswith("patch does not apply: error: patch failed")
    assert "not a unified diff" in report["reasons"]["junk"]
    assert "RuntimeError: container died" in report["reasons"]["boom"]
    assert "malformed prediction (line 8)" in report["reasons"]["typed"]
    assert any("unknown instance id 'ghost'" in p["reason"] for p in report["problems"])
