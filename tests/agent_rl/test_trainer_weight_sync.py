"""Weight sync into a real HFEngine is verified on a probe, and a stale engine is caught."""
from __future__ import annotations

import copy

import pytest
import torch

from agent_rl.engines.hf import HFEngine
from agent_rl.models import load_model
from agent_rl.weight_sync import WeightSyncError, sync_weights, verify_sync

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
        report = sync_weights(engine, model, tokenizer, 7, {**CTX, "export_dir": tmp_path})
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
        ok, diff, detail = verify_sync(engine, model, tokenizer, temperature=1.0, tolerance=1e-4,
                                       probe_tokens=16, device="cpu")
        assert ok is False and diff > 1e-3, detail
        report = sync_weights(engine, model, tokenizer, 1, {**CTX, "export_dir": tmp_path})
        assert report.method == "state_dict" and report.verified is True
        assert report.max_abs_diff <= 1e-4
    finally:
        engine.close_sync()


def test_failed_verification_is_an_error(smollm, tmp_path):
    model, tokenizer = copy.deepcopy(smollm[0]), smollm[1]
    engine = HFEngine(copy.deepcopy(model), tokenizer)
    engine.load_state_dict = lambda state, version=None: engine.weights_updated(version)  # drops the weights
    try:
        _nudge(model)
        with pytest.raises(WeightSyncError, match="failed verification"):
            sync_weights(engine, model, tokenizer, 1, {**CTX, "export_dir": tmp_path})
    finally:
        engine.close_sync()
