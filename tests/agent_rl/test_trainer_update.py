"""The update step on a fixed batch with the real SmolLM2 model (no rollouts, no Docker).

Gradient accumulation must not change the gradient (the loss is normalized over the whole
mini-batch), and the one-pass path (old logprobs = the row's own detached logprobs) must
match computing old logprobs in a separate pass.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent_rl.algo.batch import ShapingSettings, build_train_batch
from agent_rl.engines.models import load_model
from agent_rl.rollout.trajectory import Trajectory
from agent_rl.train.config import load_train_config
from agent_rl.train.update import UpdateSettings, update_step

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "smoke-cpu.yaml"


def _config(**algorithm):
    overrides = ["algorithm.kl_beta=0", *(f"algorithm.{k}={v}" for k, v in algorithm.items())]
    return load_train_config(RECIPE, overrides)


@pytest.fixture(scope="module")
def policy():
    model, tokenizer = load_model("smollm2-135m", device="cpu", dtype=torch.float32)
    return model, tokenizer


def _groups(tokenizer):
    gen = torch.Generator().manual_seed(0)
    groups = []
    for task, lengths in (("a", (5, 9)), ("b", (7, 3))):
        group = []
        for g, n in enumerate(lengths):
            prompt = torch.randint(10, 1000, (6,), generator=gen).tolist()
            response = torch.randint(10, 1000, (n,), generator=gen).tolist()
            mask = [1] * n
            mask[n // 2] = 0  # an "environment" token in the middle
            group.append(Trajectory(task_id=task, prompt_ids=prompt, response_ids=response, loss_mask=mask,
                                    behaviour_logprobs=[-3.0 * m for m in mask], reward=float(g == 0), group_index=g))
        groups.append(group)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return build_train_batch(groups, ShapingSettings.from_algorithm(_config().algorithm), pad_id)


def _grad_norm_with(policy, batch, **algorithm):
    """One call of the free update function from the same weights and a fresh optimizer."""
    model = policy[0]
    config = _config(**algorithm)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.optim.lr,
                                  weight_decay=config.optim.weight_decay, betas=tuple(config.optim.betas))
    try:
        settings = UpdateSettings.from_config(config, temperature=1.0, device="cpu")
        return update_step(model, optimizer, batch, settings, seed=config.seed * 7919 + 1)
    finally:
        model.load_state_dict(state)


def test_micro_batch_split_does_not_change_the_gradient(policy):
    batch = _groups(policy[1])
    whole = _grad_norm_with(policy, batch, mini_batch_size=4, micro_batch_size=4)
    split = _grad_norm_with(policy, batch, mini_batch_size=4, micro_batch_size=1)
    assert whole["grad_norm"] > 0
    assert split["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-4, abs=1e-7)
    assert whole["optimizer_steps"] == 1 and whole["trained_tokens"] == 4 + 8 + 6 + 2


def test_one_pass_old_logprobs_match_a_separate_pass(policy):
    batch = _groups(policy[1])
    one_pass = _grad_norm_with(policy, batch, mini_batch_size=4, micro_batch_size=2)
    # Two epochs force the separate old-logprob pass; the first optimizer step is the same.
    two_pass = _grad_norm_with(policy, batch, mini_batch_size=4, micro_batch_size=2, ppo_epochs=2)
    assert two_pass["optimizer_steps"] == 2
    assert one_pass["is_mismatch_mean_abs_logprob_diff"] == pytest.approx(
        two_pass["is_mismatch_mean_abs_logprob_diff"], rel=1e-4)
    assert one_pass["is_mismatch_mean_abs_logprob_diff"] > 0.1  # behaviour logprobs of −3 are not the model's
