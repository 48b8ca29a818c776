"""Checkpoints: atomic, pruned, loadable by from_pretrained, exportable without optimizer state."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from agent_rl.train.checkpoint import CheckpointContents, CheckpointManager, export_checkpoint
from agent_rl.engines.models import tiny_random_model
from agent_rl.train.sampler import TaskSampler


def _trained_model_and_optimizer():
    model = tiny_random_model({"vocab_size": 64}, model_type="llama")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    opt.step()
    return model, opt


def _contents(step, opt, **state):
    return CheckpointContents(step=step, trainer_state={"sampler": {"epoch": 0, "index": step}, **state}, optimizer=opt)


def test_save_load_roundtrip_and_from_pretrained(tmp_path):
    model, opt = _trained_model_and_optimizer()
    manager = CheckpointManager(tmp_path, keep_last=2)
    path = manager.save(model, None, _contents(3, opt, metrics_history=[{"step": 3}]))
    loaded = manager.load()
    assert loaded.path == path and loaded.step == 3 and loaded.has_optimizer
    assert loaded.state["metrics_history"] == [{"step": 3}]
    fresh = torch.optim.AdamW(tiny_random_model({"vocab_size": 64}, model_type="llama").parameters(), lr=1e-3)
    fresh.load_state_dict(loaded.state["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    reloaded = AutoModelForCausalLM.from_pretrained(str(loaded.model_dir))
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_rng_states_are_restored(tmp_path):
    model, opt = _trained_model_and_optimizer()
    manager = CheckpointManager(tmp_path)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    manager.save(model, None, _contents(1, opt))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    from agent_rl.train.checkpoint import restore_rng_state

    restore_rng_state(manager.load().state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_half_written_checkpoint_is_ignored_and_old_ones_pruned(tmp_path):
    model, opt = _trained_model_and_optimizer()
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        manager.save(model, None, _contents(step, opt))
    # A killed save leaves a temp dir, and a dir without COMPLETE must never be picked.
    (tmp_path / ".step-000004.tmp-1").mkdir()
    (tmp_path / "step-000005").mkdir()
    assert [s for s, _ in manager.step_dirs()] == [2, 3]
    assert manager.load().step == 3
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        manager.load(tmp_path / "step-000005")


def test_export_drops_optimizer_state(tmp_path):
    model, opt = _trained_model_and_optimizer()
    manager = CheckpointManager(tmp_path / "ckpts")
    source = manager.save(model, None, _contents(1, opt))
    out = export_checkpoint(source, tmp_path / "export")
    exported = CheckpointManager(tmp_path).load(out)
    assert not exported.has_optimizer and exported.step == 1
    assert (out / "model" / "config.json").is_file()


def test_reference_weights_saved_only_when_given(tmp_path):
    model, opt = _trained_model_and_optimizer()
    manager = CheckpointManager(tmp_path)
    assert manager.load(manager.save(model, None, _contents(1, opt))).reference_state() is None
    ref = manager.load(manager.save(model, None, CheckpointContents(2, {}, opt, reference_state=model.state_dict())))
    state = ref.reference_state()
    assert torch.equal(state["model.embed_tokens.weight"], model.state_dict()["model.embed_tokens.weight"])


def test_task_sampler_resumes_exactly():
    ids = [f"t{i}" for i in range(5)]
    straight = TaskSampler(ids, seed=3)
    first, second = straight.take(3), straight.take(4)  # crosses an epoch boundary
    again = TaskSampler(ids, seed=3)
    assert again.take(3) == first
    resumed = TaskSampler(ids, seed=3)
    resumed.load_state_dict(again.state_dict())
    assert resumed.take(4) == second
    assert sorted(first + second[:2]) == sorted(ids)  # each epoch visits every task once
    with pytest.raises(ValueError, match="same tasks and seed"):
        TaskSampler(ids[:4], seed=3).load_state_dict(again.state_dict())


def test_lora_checkpoint_has_adapter_and_merged_model(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = tiny_random_model({"vocab_size": 64}, model_type="llama")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.1)  # a trained adapter, so merged != base
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    loaded = CheckpointManager(tmp_path).load(CheckpointManager(tmp_path).save(model, None, _contents(1, opt)))
    ids = torch.tensor([[1, 2, 3, 4]])
    expected = model(input_ids=ids).logits
    merged = AutoModelForCausalLM.from_pretrained(str(loaded.model_dir))
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
    fresh = tiny_random_model({"vocab_size": 64}, model_type="llama")
    resumed = PeftModel.from_pretrained(fresh, str(loaded.adapter_dir), is_trainable=True)
    torch.testing.assert_close(resumed(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)
