"""`agent-rl train` as two FSDP2 ranks under torchrun: a rank killed mid-run, then a resume
from the sharded checkpoint.

Real parts throughout: torchrun starts two processes that join a gloo group; rank 0 rolls out
in Docker sandboxes with its own engine copy of a tiny random Llama (SmolLM2's tokenizer) and
grades in fresh containers; both ranks update their shards, gather for the weight sync and
write torch distributed checkpoints. Rank 1 is SIGKILLed once step 1's checkpoint exists;
torchrun then tears the job down. `--resume` continues from the last complete checkpoint to
the end, and its HF export loads with `from_pretrained`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent_rl.engines.models import tiny_random_model

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _overrides(model: Path, out: Path) -> list[str]:
    return [
        f"model.name={model}", f"output_dir={out}", "max_steps=3", "checkpoint.every=1", "checkpoint.keep_last=3",
        "tasks.ids=[\"datekit-001\",\"lrukit-001\"]", "agent.max_turns=1", "env.max_turns=1",
        "agent.max_tokens_per_turn=16", "logging.progress=false", "logging.tensorboard=false",
        "algorithm.kl_beta=0.01",  # a sharded reference model too
    ]


def _launch(overrides: list[str], *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "agent_rl.cli", "train", "--config", str(REPO / "configs" / "smoke-cpu.yaml"), *overrides, *extra]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The worker torchrun started as `rank` (a child of the launcher with RANK=rank)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, StopIteration):
            continue
        if ppid == launcher and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


def test_kill_a_rank_then_resume_from_the_sharded_checkpoint(tiny_dir, tmp_path, wait_for_file):
    out = tmp_path / "run"
    first = _launch(_overrides(tiny_dir, out))
    wait_for_file(first, out / "checkpoints" / "step-000001" / "COMPLETE")
    victim = _rank_pid(first.pid, 1)
    assert victim is not None, "could not find rank 1 among torchrun's workers"
    os.kill(victim, signal.SIGKILL)
    log, _ = first.communicate(timeout=300)
    assert first.returncode != 0, f"torchrun exited 0 after a rank was killed:\n{log[-3000:]}"
    assert (out / "checkpoints" / "step-000001" / "sharded").is_dir()

    second = _launch(_overrides(tiny_dir, out), "--resume")
    log, _ = second.communicate(timeout=900)
    assert second.returncode == 0, log[-5000:]
    assert "done: 3 steps" in log

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["weight_sync_verified"] for r in rows)  # the engine copy scores like the shards
    assert all(r["kl_ref"] is not None for r in rows)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e.get("event") == "resumed"]
    assert resumed and resumed[-1]["step"] >= 1
    # Every rank's optimizer shards came back: Adam's moments sum to what was saved.
    assert resumed[-1]["optimizer_fingerprint"] > 0
    assert resumed[-1]["optimizer_fingerprint"] == pytest.approx(resumed[-1]["saved_optimizer_fingerprint"], rel=1e-9)

    final = out / "checkpoints" / "step-000003"
    assert (final / "COMPLETE").is_file() and (final / "sharded").is_dir()
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(str(final / "model"))
    reference = tiny_random_model({"vocab_size": exported.config.vocab_size}, model_type="llama", seed=0)
    assert sum(p.numel() for p in exported.parameters()) == sum(p.numel() for p in reference.parameters())

    # A one-process run cannot take sharded optimizer state: it says so instead of guessing.
    from agent_rl.train.config import load_train_config
    from agent_rl.train.trainer import Trainer

    config = load_train_config(REPO / "configs" / "smoke-cpu.yaml", _overrides(tiny_dir, out))
    with pytest.raises(ValueError, match="sharded optimizer state"):
        Trainer(config, resume=True)
