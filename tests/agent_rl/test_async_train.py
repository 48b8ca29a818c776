"""`agent-rl train` with `algorithm.mode: async`, for real: a tiny random Llama (SmolLM2's
tokenizer) plays builtin tasks in hardened Docker sandboxes while the trainer updates, graded
in fresh containers. The run is SIGKILLed once its second checkpoint exists and resumed with
`--resume`: every draw the producer made is trained exactly once across the two processes
(or is still in flight when the run ends), and no trained group is older than η.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STEPS = 5


def _overrides(model: Path, out: Path) -> list[str]:
    return [
        f"model.name={model}", f"output_dir={out}", f"max_steps={STEPS}", "checkpoint.every=1", "checkpoint.keep_last=2",
        "tasks.ids=[\"datekit-001\",\"lrukit-001\",\"semvertools-001\"]", "agent.max_turns=1", "env.max_turns=1",
        "agent.max_tokens_per_turn=16", "logging.progress=false", "logging.tensorboard=false",
        "algorithm.mode=async", "algorithm.max_staleness=1", "algorithm.kl_beta=0",
        "rollout.group_size=2", "rollout.tasks_per_step=2", "rollout.concurrency=4",
    ]


def _launch(overrides: list[str], *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "agent_rl.cli", "train", "--config", str(REPO / "configs" / "smoke-cpu.yaml"),
           *overrides, *extra]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkilled_async_run_resumes_without_losing_or_repeating_draws(tiny_dir, tmp_path, wait_for_file):
    out = tmp_path / "run"
    first = _launch(_overrides(tiny_dir, out))
    wait_for_file(first, out / "checkpoints" / "step-000002" / "COMPLETE")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    killed_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    second = _launch(_overrides(tiny_dir, out), "--resume")
    log, _ = second.communicate(timeout=900)
    assert second.returncode == 0, log[-5000:]

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert rows[:2] == killed_rows[:2]  # the checkpoint's history, as it was
    assert all(r["weight_sync_verified"] for r in rows)  # the engine's own copy has each new version
    assert all(r["staleness_max"] <= 1 for r in rows), [r["staleness_hist"] for r in rows]
    assert all(r["loss"] is not None or r["groups_kept"] == 0 for r in rows)

    trained = [d for r in rows for d in r["draws"]]
    assert len(trained) == len(set(trained)), f"a draw was trained twice: {trained}"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    untrained = [e for e in events if e["event"] == "async_untrained_draws"][-1]["draws"]
    assert set(trained).isdisjoint(untrained)
    assert sorted(trained + untrained) == list(range(len(trained) + len(untrained))), (trained, untrained)
    # The tasks are the sampler's stream, position by position: none skipped or repeated.
    from agent_rl.train.sampler import TaskSampler

    stream = TaskSampler(sorted(["datekit-001", "lrukit-001", "semvertools-001"]), seed=0).take(len(trained) + len(untrained))
    for row in rows:
        assert row["task_ids"] == [stream[d] for d in row["draws"]]
