"""Weight sync into a real HFEngine is verified on a probe, and a stale engine is caught."""
from __future__ import annotations

import asyncio
import copy

import pytest
import torch

from agent_rl.engines.hf import HFEngine
from agent_rl.engines.models import load_model
from agent_rl.train.weight_sync import WeightSyncError, sync_weights, verify_sync

CTX = {"verify": True, "tolerance": 1e-4, "probe_tokens": 16, "temperature": 1.0, "device": "cpu"}


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m", device="cpu")


def _nudge(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-2)


def test_shared_model_sync_bumps_version_and_verifies(smollm, tmp_path):
    model, tokenizer = copy.deepcopy(smollm[0]), smollm[1]
    engine = HFEngine(model, tokenizer)
    try:
        _nudge(model)
        report = asyncio.run(sync_weights(engine, model, tokenizer, 7, {**CTX, "export_dir": tmp_path}))
        assert report.method == "shared" and report.verified is True
        assert report.max_abs_diff <= 1e-4
        assert engine.policy_version == 7
    finally:
        engine.close_sync()


def test_separate_engine_is_stale_until_synced(smollm, tmp_path):
    model, tokenizer = copy.deepcopy(smollm[0]), smollm[1]
    engine = HFEngine(copy.deepcopy(model), tokenizer)
    try:
        _nudge(model)  # the trainer moved on; the engine still has the old weights
        ok, diff, detail = asyncio.run(verify_sync(engine, model, tokenizer, temperature=1.0, tolerance=1e-4,
                                                   probe_tokens=16, device="cpu"))
        assert ok is False and diff > 1e-3, detail
        # A push that silently drops the weights (test double) must be caught by verification.
        real_load = engine.load_state_dict
        engine.load_state_dict = lambda state, version=None: engine.weights_updated(version)
        with pytest.raises(WeightSyncError, match="failed verification"):
            asyncio.run(sync_weights(engine, model, tokenizer, 1, {**CTX, "export_dir": tmp_path}))
        engine.load_state_dict = real_load
        report = asyncio.run(sync_weights(engine, model, tokenizer, 2, {**CTX, "export_dir": tmp_path}))
        assert report.method == "state_dict" and report.verified is True
        assert report.max_abs_diff <= 1e-4 and engine.policy_version == 2
    finally:
        engine.close_sync()


class _Server:
    """`agent-rl serve` on a free loopback port, as a real subprocess."""

    def __init__(self, log_path):
        import os
        import subprocess
        import sys

        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent_rl.cli", "serve", "--port", "0"],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        for line in self.proc.stdout:  # the server prints "... at http://127.0.0.1:PORT" once loaded
            if " at http://" in line:
                self.url = line.split(" at ", 1)[1].strip()
                return
        raise RuntimeError(f"agent-rl serve exited: {open(log_path).read()[-2000:]}")

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


@pytest.mark.slow
def test_openai_engine_checkpoint_reload_over_http(smollm, tmp_path):
    from agent_rl.engines.openai_http import OpenAIEngine

    model, tokenizer = copy.deepcopy(smollm[0]), smollm[1]
    server = _Server(tmp_path / "serve.log")
    engine = OpenAIEngine(server.url, "smollm2-135m", tokenizer=tokenizer)

    async def scenario():
        try:
            _nudge(model)
            stale, diff, _ = await verify_sync(engine, model, tokenizer, temperature=1.0, tolerance=1e-3,
                                               probe_tokens=16, device="cpu")
            assert stale is False and diff > 1e-3  # the server still serves the original weights
            report = await sync_weights(engine, model, tokenizer, 5, {**CTX, "tolerance": 1e-3, "export_dir": tmp_path})
            assert report.method == "checkpoint_reload" and report.verified is True
            assert engine.policy_version == 5
        finally:
            await engine.close()

    try:
        asyncio.run(scenario())  # one loop for the whole exchange, as the trainer does
    finally:
        server.close()
