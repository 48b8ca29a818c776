"""Real DAPO training on CPU: SmolLM2-135M, the in-process hf engine, builtin easy tasks in Docker.

One uninterrupted two-step run is shared by the tests below; a second run of the same recipe
is SIGKILLed after its first checkpoint and resumed through the CLI, and must continue with
the tasks and optimizer state the uninterrupted run had.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agent_rl.train.checkpoint import CheckpointManager
from agent_rl.train.metrics import STEP_METRICS
from agent_rl.train.config import load_train_config
from agent_rl.train.trainer import Trainer

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "smoke-cpu.yaml"
# Cheap rollouts: one task × 2 samples, 2 turns of 24 tokens. Micro-batch 1 < mini-batch 2
# exercises gradient accumulation; the entropy bonus and KL term give a gradient even when
# every episode fails (a 135M model rarely solves a task, so GRPO advantages are often 0).
OVERRIDES = [
    "max_steps=2",
    # Pinned tasks: the builtin suite may grow, and both runs must see the same task set.
    "tasks.ids=[datekit-001,datekit-002,semvertools-001,semvertools-002]",
    "rollout.tasks_per_step=1",
    "rollout.group_size=2",
    "rollout.concurrency=2",
    "agent.max_tokens_per_turn=24",
    "agent.max_turns=2",
    "env.max_turns=2",
    "algorithm.mini_batch_size=2",
    "algorithm.micro_batch_size=1",
    "algorithm.entropy_coef=0.01",
    "algorithm.kl_beta=0.01",
    "checkpoint.every=1",
    "checkpoint.keep_last=3",
    "logging.progress=false",
]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    config = load_train_config(RECIPE, OVERRIDES + [f"output_dir={out}"])
    trainer = Trainer(config)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    history = trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = sum(not torch.equal(before[n], after[n].detach()) for n in before)
    yield {"dir": out, "history": history, "changed": changed, "total": len(before)}
    # Its checkpoints hold SmolLM2 with Adam state (GBs): free the disk when the module is done,
    # not at the end of the session.
    shutil.rmtree(out, ignore_errors=True)


def test_two_steps_train_log_and_checkpoint(straight_run):
    out, history = straight_run["dir"], straight_run["history"]
    assert straight_run["changed"] > 0.9 * straight_run["total"], "an update step must change the weights"
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        missing = [k for k in STEP_METRICS if k not in row]
        assert not missing, f"metrics.jsonl lacks {missing}"
        assert row["grad_norm"] > 0 and row["optimizer_steps"] == 1
        assert row["weight_sync_verified"] is True
    assert (out / "training_curves.png").stat().st_size > 0
    assert any((out / "tensorboard").iterdir())
    latest = CheckpointManager(out / "checkpoints").load()
    assert latest.step == 2 and latest.has_optimizer
    assert (latest.model_dir / "config.json").is_file() and (latest.model_dir / "model.safetensors").is_file()
    assert len(list((out / "rollouts").glob("*.jsonl"))) == 2


def _optimizer_fingerprint(state: dict) -> float:
    return sum(float(v.double().abs().sum()) for s in state["state"].values() for v in s.values() if torch.is_tensor(v))


def test_sigkill_then_resume_continues_exactly(straight_run, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "agent_rl.cli", "train", "--config", str(RECIPE), *OVERRIDES, f"output_dir={out}"]
    first_ckpt = out / "checkpoints" / "step-000001" / "COMPLETE"
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not first_ckpt.exists():
            assert proc.poll() is None, f"trainer exited early: {proc.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 15 minutes"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its engine worker, mid step 2
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = CheckpointManager(out / "checkpoints").load()
    assert saved.step == 1

    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2], "steps logged by the killed run after its checkpoint must not repeat"
    straight = {r["step"]: r for r in straight_run["history"]}
    # Same tasks as the uninterrupted run, at both steps.
    assert [r["task_ids"] for r in rows] == [straight[1]["task_ids"], straight[2]["task_ids"]]
    # Step 2 started from exactly the optimizer state the checkpoint held (the trainer logs the
    # restored state's fingerprint once, when it resumes; nothing touches it before step 2).
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
    resumed = [e for e in events if e["event"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["step"] == 1
    assert resumed[0]["optimizer_fingerprint"] == pytest.approx(_optimizer_fingerprint(saved.state["optimizer"]), rel=1e-12)
    assert saved.state["sampler"] == CheckpointManager(straight_run["dir"] / "checkpoints").load(
        straight_run["dir"] / "checkpoints" / "step-000001").state["sampler"]
