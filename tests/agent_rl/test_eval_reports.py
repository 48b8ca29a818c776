"""Evaluation bookkeeping with a scripted sample runner (a unit double beside the real
SmolLM2 + Docker evaluation in test_eval_real.py): resume, error rows, reports, plot."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from agent_rl.eval.evaluate import EvalConfig, ResultsStore, evaluate, result_row, sample_seed
from agent_rl.eval.passk import pass_at_k


@dataclass
class FakeTask:
    instance_id: str


class ScriptedRunner:
    """Resolves sample s of task t iff (t, s) is in `wins`; raises for `broken`."""

    def __init__(self, wins: set[tuple[str, int]], broken: set[tuple[str, int]] = frozenset()) -> None:
        self.wins = wins
        self.broken = broken
        self.calls: list[tuple[str, int]] = []

    async def run(self, task: FakeTask, sample: int, seed: int) -> dict:
        self.calls.append((task.instance_id, sample))
        if (task.instance_id, sample) in self.broken:
            raise RuntimeError("sandbox exploded")
        resolved = (task.instance_id, sample) in self.wins
        return result_row(task=task.instance_id, sample=sample, seed=seed, resolved=resolved, reward=float(resolved),
                          turns=2, tokens=10, finish_reason="submitted", patch="diff", timing={"total_s": 0.01})


async def test_eval_writes_reports_records_errors_and_resumes(tmp_path) -> None:
    tasks = [FakeTask("a"), FakeTask("b")]
    cfg = EvalConfig(model="m", tasks="fake", out=str(tmp_path), samples=4, workers=3)
    first = ScriptedRunner(wins={("a", 0), ("b", 1), ("b", 2)}, broken={("a", 3)})
    report = await evaluate(cfg, tasks, first, progress=False)

    assert sorted(first.calls) == [(t, s) for t in "ab" for s in range(4)]
    rows = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    broken = [r for r in rows if r["error"]]
    assert len(broken) == 1 and broken[0]["task"] == "a" and "sandbox exploded" in broken[0]["error"]
    assert {"task", "sample", "resolved", "turns", "tokens", "finish_reason", "patch", "timing"} <= set(rows[0])

    assert report["per_task"]["a"]["c"] == 1 and report["per_task"]["a"]["n"] == 4
    assert report["per_task"]["b"]["c"] == 2
    assert report["error_counts"] == {"RuntimeError": 1}
    for k in (1, 2, 4):
        expected = (pass_at_k(4, 1, k) + pass_at_k(4, 2, k)) / 2
        assert report["pass_at_k"][str(k)] == pytest.approx(expected)
    assert report["pass_at_1"]["mean"] == pytest.approx((0.25 + 0.5) / 2)
    assert (tmp_path / "report.md").read_text().startswith("# Evaluation: m on fake")
    assert (tmp_path / "pass_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Re-run: nothing left to do. With retry_errors only the broken sample runs again.
    again = ScriptedRunner(wins=set())
    await evaluate(cfg, tasks, again, progress=False)
    assert again.calls == []
    cfg.retry_errors = True
    retry = ScriptedRunner(wins={("a", 3)})
    report = await evaluate(cfg, tasks, retry, progress=False)
    assert retry.calls == [("a", 3)]
    assert report["per_task"]["a"]["c"] == 2 and report["totals"]["errors"] == 0

    # More samples later: only the new indices run.
    cfg.samples = 5
    more = ScriptedRunner(wins=set())
    report = await evaluate(cfg, tasks, more, progress=False)
    assert sorted(more.calls) == [("a", 4), ("b", 4)]
    assert report["per_task"]["b"]["n"] == 5


def test_results_store_skips_a_torn_last_line(tmp_path) -> None:
    good = result_row(task="a", sample=0, seed=1, resolved=True)
    (tmp_path / "results.jsonl").write_text(json.dumps(good) + "\n" + '{"task": "a", "sam')
    store = ResultsStore(str(tmp_path))
    assert store.is_done("a", 0, retry_errors=False)
    assert not store.is_done("a", 1, retry_errors=False)
    store.append(result_row(task="a", sample=1, seed=2, resolved=False))
    again = ResultsStore(str(tmp_path))  # the new record did not merge into the torn line
    assert again.is_done("a", 1, retry_errors=False) and again.is_done("a", 0, retry_errors=False)


def test_config_rejects_k_beyond_samples_and_seeds_are_order_free() -> None:
    with pytest.raises(ValueError, match=r"exceed --samples 2"):
        EvalConfig(model="m", tasks="t", out="o", samples=2, ks=[1, 4])
    assert sample_seed(0, "a", 1) == sample_seed(0, "a", 1) != sample_seed(0, "a", 2)


async def test_rerun_with_other_settings_samples_again_instead_of_reusing_old_rows(tmp_path) -> None:
    """A results.jsonl written under other settings (here greedy: the pipeline's default eval)
    must not stand in for a temperature-1 eval into the same directory: the old rows were
    reported as the new eval's outcomes, though no sample had been drawn at temperature 1."""
    tasks = [FakeTask("a"), FakeTask("b")]
    greedy = EvalConfig.from_config({"model": "m", "tasks": "fake", "out": str(tmp_path), "samples": 2,
                                     "agent": {"sampling": {"temperature": 0.0}}})
    first = ScriptedRunner(wins={("a", 0), ("a", 1), ("b", 0), ("b", 1)})
    assert (await evaluate(greedy, tasks, first, progress=False))["totals"]["resolved"] == 4

    sampled = EvalConfig.from_config({"model": "m", "tasks": "fake", "out": str(tmp_path), "samples": 2,
                                      "agent": {"sampling": {"temperature": 1.0}}})
    second = ScriptedRunner(wins={("a", 1)})
    report = await evaluate(sampled, tasks, second, progress=False)
    assert sorted(second.calls) == [(t, s) for t in "ab" for s in range(2)]
    assert report["totals"]["resolved"] == 1 and report["totals"]["samples"] == 4

    # Same settings again: everything resumes; more samples: only the new indices run.
    again = ScriptedRunner(wins=set())
    await evaluate(sampled, tasks, again, progress=False)
    assert again.calls == []
    sampled.samples = 3
    more = ScriptedRunner(wins=set())
    report = await evaluate(sampled, tasks, more, progress=False)
    assert sorted(more.calls) == [("a", 2), ("b", 2)] and report["totals"]["samples"] == 6
