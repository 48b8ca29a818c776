"""The update step on a fixed batch with the real SmolLM2 model (no rollouts, no Docker).

Gradient accumulation must not change the gradient (the loss is normalized over the whole
mini-batch), and the one-pass path (old logprobs = the row's own detached logprobs) must
match computing old logprobs in a separate pass.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent_rl.algo.batch import build_train_batch
from agent_rl.train.config import load_train_config
from agent_rl.train.trainer import Trainer
from agent_rl.rollout.trajectory import Trajectory

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "smoke-cpu.yaml"


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    out = tmp_path_factory.mktemp("update")
    config = load_train_config(RECIPE, [f"output_dir={out}", "logging.tensorboard=false", "algorithm.kl_beta=0"])
    with Trainer(config) as t:
        yield t


def _groups(trainer):
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
    return build_train_batch(groups, trainer._shaping(), trainer.pad_id)


def _grad_norm_with(trainer, batch, **algorithm):
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    saved_alg = trainer.config.algorithm
    trainer.config.algorithm = saved_alg.model_copy(update=algorithm)
    try:
        return trainer._update(batch, step=1)
    finally:
        trainer.config.algorithm = saved_alg
        trainer.model.load_state_dict(state)
        trainer.optimizer.state.clear()


def test_micro_batch_split_does_not_change_the_gradient(trainer):
    batch = _groups(trainer)
    whole = _grad_norm_with(trainer, batch, mini_batch_size=4, micro_batch_size=4)
    split = _grad_norm_with(trainer, batch, mini_batch_size=4, micro_batch_size=1)
    assert whole["grad_norm"] > 0
    assert split["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-4, abs=1e-7)
    assert whole["optimizer_steps"] == 1 and whole["trained_tokens"] == 4 + 8 + 6 + 2


def test_one_pass_old_logprobs_match_a_separate_pass(trainer):
    batch = _groups(trainer)
    one_pass = _grad_norm_with(trainer, batch, mini_batch_size=4, micro_batch_size=2)
    # Two epochs force the separate old-logprob pass; the first optimizer step is the same.
    two_pass = _grad_norm_with(trainer, batch, mini_batch_size=4, micro_batch_size=2, ppo_epochs=2)
    assert two_pass["optimizer_steps"] == 2
    assert one_pass["is_mismatch_mean_abs_logprob_diff"] == pytest.approx(
        two_pass["is_mismatch_mean_abs_logprob_diff"], rel=1e-4)
    assert one_pass["is_mismatch_mean_abs_logprob_diff"] > 0.1  # behaviour logprobs of −3 are not the model's
