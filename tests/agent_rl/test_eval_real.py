"""A real `agent-rl eval`: SmolLM2-135M (hf engine) on built-in tasks in Docker, n=4,
then a resume after an interruption, then `compare` on two real eval dirs."""
from __future__ import annotations

import json
import shutil

import pytest

from agent_rl.cli import main
from agent_rl.eval.evaluate import ResultsStore

# On 2 idle cores this takes a few minutes; on a saturated machine SmolLM2's prefill of the
# ~800-token first prompt alone can take a minute, hence the generous limit.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

N = 4


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory) -> str:
    from envs.tasks import load_tasks

    tasks = load_tasks("builtin:semvertools:easy")[:2]
    path = tmp_path_factory.mktemp("tasks") / "two.jsonl"
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks))
    return str(path)


def _eval(tasks: str, out: str) -> int:
    # Tiny episodes: the point is the evaluation machinery on the real model and sandboxes,
    # not the model's skill (a 135M model rarely solves anything in one 8-token turn).
    return main([
        "eval", "--model", "smollm2-135m", "--tasks", tasks, "--samples", str(N), "--k", "1,2,4",
        "--workers", "2", "--max-turns", "1", "--max-tokens-per-turn", "8", "--max-total-tokens", "3072",
        "--out", out, "--no-progress",
    ])


def _rows(out) -> list[dict]:
    # As the evaluator reads them: the last record per (task, sample), torn lines skipped.
    return list(ResultsStore(str(out)).rows.values())


def test_eval_writes_reports_and_resumes(two_tasks, tmp_path) -> None:
    out = tmp_path / "base"
    assert _eval(two_tasks, str(out)) == 0

    rows = _rows(out)
    assert len(rows) == 2 * N
    assert sorted((r["task"], r["sample"]) for r in rows) == sorted(
        (t, s) for t in {r["task"] for r in rows} for s in range(N))
    for row in rows:
        assert row["error"] is None, row["error"]
        assert row["turns"] == 1 and 0 < row["tokens"] <= 8
        assert row["finish_reason"] and row["timing"]["total_s"] > 0
        assert "resolved" in row["grade"] and isinstance(row["patch"], str)
    report = json.loads((out / "report.json").read_text())
    assert report["totals"]["samples"] == 2 * N and report["totals"]["errors"] == 0
    assert sorted(report["pass_at_k"]) == ["1", "2", "4"]
    assert all(t["n"] == N for t in report["per_task"].values())
    assert (out / "report.md").read_text().startswith("# Evaluation: smollm2-135m")
    assert (out / "pass_at_k.png").read_bytes()[:4] == b"\x89PNG"

    # Interrupt mid-write: the last line is torn. The re-run does only that sample.
    lines = (out / "results.jsonl").read_text().splitlines()
    torn = json.loads(lines[-1])
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])
    assert _eval(two_tasks, str(out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["resumed_samples"] == 2 * N - 1 and report["meta"]["ran_samples"] == 1
    last = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert (last["task"], last["sample"]) == (torn["task"], torn["sample"])
    assert report["totals"]["samples"] == 2 * N
    # A complete directory: nothing left to run.
    assert _eval(two_tasks, str(out)) == 0
    assert json.loads((out / "report.json").read_text())["meta"]["ran_samples"] == 0

    other = tmp_path / "again"
    shutil.copytree(out, other)
    assert main(["compare", str(out), str(other), "--out", str(tmp_path / "cmp")]) == 0
    comp = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert comp["shared_ks"] == [1, 2, 4] and comp["crossover_k"] == {"again": 1}


def test_a_dataset_image_that_is_missing_fails_the_eval_before_the_model_loads(tmp_path, monkeypatch) -> None:
    from envs.task_images import ImageUnavailableError

    monkeypatch.setenv("AGENT_RL_IMAGE_PULL", "0")  # no registry here; the check is the point
    row = {"instance_id": "agentrl__gone-1", "repo": "agent-rl/gone", "base_commit": "e7fd69d051eaa67cb17f172a39b57253e9cb831a",
           "problem_statement": "p", "FAIL_TO_PASS": json.dumps(["t"]), "image_name": "agent-rl-test/missing:none"}
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(row) + "\n")
    # The model path does not exist either: the image check must come first, and name the task.
    with pytest.raises(ImageUnavailableError, match=r"agent-rl-test/missing:none \(task 'agentrl__gone-1'\)"):
        main(["eval", "--model", str(tmp_path / "no-such-model"), "--tasks", str(rows), "--out", str(tmp_path / "e"),
              "--no-progress"])
    assert not (tmp_path / "e" / "results.jsonl").exists()
