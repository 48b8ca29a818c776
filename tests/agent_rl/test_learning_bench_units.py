"""The learning benchmark's pure parts: task subsets that span libraries and stay in their
split, and the RL curve's last-3 vs first-3 bootstrap interval."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from envs.suites.splits import SPLITS

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_bench.py"
_spec = importlib.util.spec_from_file_location("learning_bench", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_task_subsets_span_libraries_and_stay_in_their_split():
    train = bench.pick_tasks("floor", "train", 5)
    assert [t.instance_id.split("-")[0] for t in train][:4] == sorted(SPLITS["train"])
    assert all(t.instance_id.endswith("-floor") for t in train)
    heldout = bench.pick_tasks("floor", "heldout", 3)
    assert {t.instance_id.split("-")[0] for t in heldout} <= set(SPLITS["heldout"])


def test_bootstrap_interval_excludes_zero_only_for_a_clear_rise(tmp_path):
    clear = bench.bootstrap_diff([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert clear["diff"] == clear["ci_low"] == clear["ci_high"] == 1.0
    noisy = bench.bootstrap_diff([0.0, 1.0, 0.0], [1.0, 0.0, 0.0])
    assert noisy["diff"] == 0.0 and noisy["ci_low"] < 0 < noisy["ci_high"]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": i, "reward_mean": r}) + "\n"
                               for i, r in enumerate([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])))
    curve = bench.reward_curve(metrics)
    assert curve["rewards"] == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0] and curve["rises"]
    assert curve["diff"] == pytest.approx(2.5 / 3 - 0.5 / 3)
    metrics.write_text(json.dumps({"step": 1, "reward_mean": 0.0}) + "\n")
    assert "note" in bench.reward_curve(metrics)
