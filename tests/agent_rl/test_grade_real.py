"""`agent-rl grade` against real built-in tasks, each patch graded in a fresh container."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent_rl.cli import main

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BINARY = "diff --git a/logo.png b/logo.png\nnew file mode 100644\nindex 0000000..e69de29\nGIT binary patch\nliteral 4\nLcmZ?wbhEHbP0l+XkK\n"


def _not_applying(patch: str) -> str:
    # A well-formed diff that removes lines the file does not have: neither git apply nor
    # patch --fuzz can place it.
    lines = patch.splitlines(keepends=True)
    return "".join(
        "-no such line in the file at all\n" if l.startswith("-") and not l.startswith("---") else l
        for l in lines
    )


def test_grade_mixed_predictions_gives_the_exact_report(tmp_path) -> None:
    from envs.tasks import load_tasks

    tasks = {t.instance_id: t for t in load_tasks("builtin:semvertools:easy")}
    ids = sorted(tasks)
    gold_id, wrong_id, empty_id, garbage_id = ids[:4]
    gold = tasks[gold_id]
    # A patch that applies and fixes nothing: a comment after the first line of the buggy file.
    path = tasks[wrong_id].patch.split("\n", 1)[0].split(" b/")[-1]
    with open(f"{tasks[wrong_id].repo}/{path}", encoding="utf-8") as fh:
        head = fh.readline().rstrip("\n")
    wrong_patch = (f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
                   f"@@ -1 +1,2 @@\n {head}\n+# a comment fixes nothing\n")
    lines = [
        json.dumps({"instance_id": gold_id, "model_patch": gold.patch, "model_name_or_path": "gold"}),
        json.dumps({"instance_id": wrong_id, "model_patch": wrong_patch, "model_name_or_path": "m"}),
        json.dumps({"instance_id": empty_id, "model_patch": "", "model_name_or_path": "m"}),
        json.dumps({"instance_id": garbage_id, "model_patch": "I think the bug is in ranges.py", "model_name_or_path": "m"}),
        json.dumps({"instance_id": "nosuchlib-999", "model_patch": gold.patch, "model_name_or_path": "m"}),
        "{this line is not json",
    ]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert main(["grade", str(preds), "--tasks", "builtin:semvertools:easy", "--workers", "2", "--out", str(out)]) == 0

    report = json.loads((out / "report.json").read_text())
    expected_counts = {
        "total_instances": len(tasks), "submitted_instances": 4, "completed_instances": 2,
        "resolved_instances": 1, "unresolved_instances": 1, "empty_patch_instances": 1,
        "error_instances": 1, "unknown_instances": 1, "malformed_predictions": 1,
    }
    assert {k: report[k] for k in expected_counts} == expected_counts
    assert report["resolved_ids"] == [gold_id]
    assert report["unresolved_ids"] == [wrong_id]
    assert report["empty_patch_ids"] == [empty_id]
    assert report["error_ids"] == [garbage_id]
    assert report["unknown_ids"] == ["nosuchlib-999"]
    assert "not a unified diff" in report["reasons"][garbage_id]
    assert any(p["where"] == "line 6" and "not valid JSON" in p["reason"] for p in report["problems"])
    per_instance = json.loads((out / "instances" / gold_id / "report.json").read_text())[gold_id]
    assert per_instance["resolved"] and per_instance["report"]["patch_successfully_applied"]
    assert (out / "instances" / gold_id / "patch.diff").read_text() == gold.patch

    # The official harness's layout: its own make_run_report reads our per-instance files and
    # writes the summary we wrote.
    from swebench.harness.reporting import make_run_report

    submitted = [json.loads(line) for line in lines[:4]]
    predictions = {p["instance_id"]: p for p in submitted}
    official_dir = tmp_path / "official"
    cwd = os.getcwd()
    os.chdir(out)  # it reads logs/run_evaluation relative to the working directory
    try:
        official = Path(make_run_report(predictions, [{"instance_id": i} for i in ids], "agent-rl", client=None,
                                        report_dir=str(official_dir)))
    finally:
        os.chdir(cwd)
    ours = Path(report["official_report"])
    assert ours.name == official.name == "gold.agent-rl.json"
    assert json.loads(ours.read_text()) == json.loads(official.read_text())
    summary = json.loads(ours.read_text())
    assert summary["resolved_ids"] == [gold_id] and summary["unresolved_ids"] == [wrong_id]
    assert summary["empty_patch_ids"] == [empty_id] and summary["error_ids"] == [garbage_id]
    instance = json.loads((out / "logs/run_evaluation/agent-rl/gold" / gold_id / "report.json").read_text())[gold_id]
    assert instance["resolved"] and instance["tests_status"]["FAIL_TO_PASS"]["success"] == gold.FAIL_TO_PASS


def test_patches_that_do_not_apply_and_binary_patches_are_errors_with_reasons(tmp_path) -> None:
    from envs.tasks import load_tasks

    tasks = {t.instance_id: t for t in load_tasks("builtin:semvertools:easy")}
    a, b = sorted(tasks)[:2]
    preds = tmp_path / "preds.json"  # the JSON-list form
    preds.write_text(json.dumps([
        {"instance_id": a, "model_patch": _not_applying(tasks[a].patch), "model_name_or_path": "m"},
        {"instance_id": b, "model_patch": BINARY, "model_name_or_path": "m"},
    ]))
    out = tmp_path / "run"
    assert main(["grade", str(preds), "--tasks", "builtin:semvertools:easy", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["error_ids"] == sorted([a, b]) and report["completed_instances"] == 0
    assert report["reasons"][a].startswith("patch does not apply")
    assert report["reasons"][b].startswith("binary patch")
