"""DAPO loss pieces against values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from agent_rl.algo.loss import (
    LossNormalizer,
    aggregate_loss,
    dapo_loss,
    decoupled_ppo_loss,
    kl_k3,
    policy_loss,
    truncated_is_weights,
)

LOG = math.log


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_clip_higher_cases_by_hand():
    # ratios 1.5, 1.5, 0.5, 0.5 against advantages +1, -1, -1, +1
    logp = _t([[LOG(1.5), LOG(1.5), LOG(0.5), LOG(0.5)]])
    old = torch.zeros_like(logp)
    adv = _t([[1.0, -1.0, -1.0, 1.0]])
    out = policy_loss(logp, old, adv, eps_low=0.2, eps_high=0.28)
    # A>0, r=1.5: min(1.5, 1.28) = 1.28 → loss −1.28, upper bound active
    # A<0, r=1.5: −min(−1.5, −1.28) = 1.5, no clip (pessimistic side)
    # A<0, r=0.5: −min(−0.5, −0.8) = 0.8, lower bound active
    # A>0, r=0.5: −min(0.5, 0.8) = −0.5, no clip
    assert out.per_token.tolist()[0] == pytest.approx([-1.28, 1.5, 0.8, -0.5])
    assert out.clip_high.tolist()[0] == [True, False, False, False]
    assert out.clip_low.tolist()[0] == [False, False, True, False]


def test_asymmetric_bounds_are_used():
    logp = _t([[LOG(1.25)]])
    out = policy_loss(logp, torch.zeros_like(logp), _t([1.0]), eps_low=0.2, eps_high=0.28)
    assert out.per_token.item() == pytest.approx(-1.25)  # 1.25 < 1.28: inside clip-higher
    out_sym = policy_loss(logp, torch.zeros_like(logp), _t([1.0]), eps_low=0.2, eps_high=0.2)
    assert out_sym.per_token.item() == pytest.approx(-1.2)


def test_dual_clip_bounds_negative_advantage():
    logp = _t([[LOG(5.0), LOG(5.0)]])
    adv = _t([[-1.0, 1.0]])
    plain = policy_loss(logp, torch.zeros_like(logp), adv)
    dual = policy_loss(logp, torch.zeros_like(logp), adv, dual_clip_c=3.0)
    assert plain.per_token.tolist()[0] == pytest.approx([5.0, -1.28])
    assert dual.per_token.tolist()[0] == pytest.approx([3.0, -1.28])
    assert dual.dual_clip.tolist()[0] == [True, False]
    with pytest.raises(ValueError, match="dual_clip_c"):
        policy_loss(logp, logp, adv, dual_clip_c=0.5)


def test_aggregations_by_hand():
    per_token = _t([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = _t([[1, 1, 1], [1, 0, 0]])
    norm = LossNormalizer.for_batch(mask, norm_length=4)
    assert aggregate_loss(per_token, mask, "token-mean", norm).item() == pytest.approx(10 / 4)
    assert aggregate_loss(per_token, mask, "seq-mean-token-mean", norm).item() == pytest.approx((6 / 3 + 4 / 1) / 2)
    assert aggregate_loss(per_token, mask, "seq-mean-token-sum-norm", norm).item() == pytest.approx((6 / 4 + 4 / 4) / 2)
    with pytest.raises(ValueError, match="unknown loss aggregation 'mean'"):
        aggregate_loss(per_token, mask, "mean", norm)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_sum_to_the_mini_batch_loss(mode):
    gen = torch.Generator().manual_seed(0)
    per_token = torch.rand(6, 5, generator=gen, dtype=torch.float64)
    mask = (torch.rand(6, 5, generator=gen) > 0.3).double()
    norm = LossNormalizer.for_batch(mask, norm_length=5)
    whole = aggregate_loss(per_token, mask, mode, norm)
    parts = sum(aggregate_loss(per_token[i : i + 2], mask[i : i + 2], mode, norm) for i in range(0, 6, 2))
    assert parts.item() == pytest.approx(whole.item())


def test_empty_mask_gives_zero_not_nan():
    per_token = _t([[1.0, 2.0]])
    mask = _t([[0, 0]])
    norm = LossNormalizer.for_batch(mask)
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        assert aggregate_loss(per_token, mask, mode, norm).item() == 0.0
    logp = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    out = dapo_loss(logp, logp.detach(), _t([1.0]), mask, norm)
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.isfinite(logp.grad).all()


def test_single_token_response_gradient_by_hand():
    # One token, r = 1 at the start, A = 2: d/dlogp of −r·A = −A·r = −2.
    logp = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    mask = _t([[1]])
    out = dapo_loss(logp, torch.zeros(1, 1, dtype=torch.float64), _t([2.0]), mask, LossNormalizer.for_batch(mask))
    out.loss.backward()
    assert out.loss.item() == pytest.approx(-2.0)
    assert logp.grad.item() == pytest.approx(-2.0)


def test_clipped_token_has_no_gradient():
    logp = torch.tensor([[LOG(1.5)]], dtype=torch.float64, requires_grad=True)
    mask = _t([[1]])
    out = dapo_loss(logp, torch.zeros(1, 1, dtype=torch.float64), _t([1.0]), mask, LossNormalizer.for_batch(mask))
    out.loss.backward()
    assert logp.grad.item() == 0.0
    assert out.clip_high_count == 1.0


def test_k3_kl_by_hand():
    # d = log 0.5 → exp(d) − d − 1 = 0.5 + ln 2 − 1
    kl = kl_k3(_t([[0.0, LOG(0.3)]]), _t([[LOG(0.5), LOG(0.3)]]))
    assert kl.tolist()[0] == pytest.approx([0.5 + math.log(2) - 1, 0.0])


def test_kl_and_entropy_terms_enter_the_loss():
    logp = _t([[0.0, 0.0]])
    mask = _t([[1, 1]])
    norm = LossNormalizer.for_batch(mask)
    ref = _t([[LOG(0.5), LOG(0.5)]])
    entropy = _t([[1.0, 3.0]])
    base = dapo_loss(logp, logp, _t([0.0]), mask, norm)
    full = dapo_loss(logp, logp, _t([0.0]), mask, norm, ref_logprobs=ref, kl_beta=0.1, entropy=entropy, entropy_coef=0.01)
    kl = 0.5 + math.log(2) - 1
    assert base.loss.item() == pytest.approx(0.0)
    assert full.loss.item() == pytest.approx(0.1 * kl - 0.01 * 2.0)
    assert full.kl_ref_sum == pytest.approx(2 * kl)
    assert full.entropy_sum == pytest.approx(4.0)


def test_truncated_importance_sampling_by_hand():
    old = _t([[0.0, LOG(0.5), 0.0]])
    behaviour = _t([[LOG(0.25), 0.0, 0.0]])
    mask = _t([[1, 1, 0]])
    out = truncated_is_weights(old, behaviour, mask, cap=2.0)
    # ratios 4 (capped to 2) and 0.5; the unmasked position is 0
    assert out.weights.tolist()[0] == pytest.approx([2.0, 0.5, 0.0])
    assert out.max_ratio == pytest.approx(4.0)
    assert out.mean_abs_logprob_diff == pytest.approx((math.log(4) + math.log(2)) / 2)
    assert out.fraction_capped == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(old, behaviour, mask, cap=0)


def test_is_weights_scale_the_policy_loss():
    logp = _t([[0.0, 0.0]])
    out = policy_loss(logp, logp, _t([1.0]), is_weights=_t([[2.0, 0.5]]))
    assert out.per_token.tolist()[0] == pytest.approx([-2.0, -0.5])


def test_decoupled_loss_is_dapo_when_proximal_and_behaviour_policies_coincide():
    # η = 0, π_prox = π_behav: the importance weight is 1 and nothing else changes.
    logp = _t([[LOG(1.5) + LOG(0.4), LOG(0.5) + LOG(0.3), LOG(0.2)]]).requires_grad_()
    prox = _t([[LOG(0.4), LOG(0.3), LOG(0.2)]])
    adv = _t([0.5])
    mask = _t([[1.0, 1.0, 0.0]])
    norm = LossNormalizer.for_batch(mask)
    dec = decoupled_ppo_loss(logp, prox, prox.clone(), adv, mask, norm, is_cap=2.0, eps_low=0.2, eps_high=0.28)
    ref = dapo_loss(logp, prox, adv, mask, norm, eps_low=0.2, eps_high=0.28)
    assert dec.loss.item() == ref.loss.item()
    # By hand: r = 1.5 (A>0, clipped at 1.28) and r = 0.5 (A>0, unclipped):
    # (−0.5·1.28 − 0.5·0.5) / 2 tokens.
    assert dec.loss.item() == pytest.approx((-0.5 * 1.28 - 0.5 * 0.5) / 2)
    (grad_dec,) = torch.autograd.grad(dec.loss, logp)
    (grad_ref,) = torch.autograd.grad(ref.loss, logp)
    assert torch.equal(grad_dec, grad_ref)


def test_decoupled_loss_weights_stale_tokens_by_prox_over_behaviour_by_hand():
    # Token 1 was sampled by an engine version under which it had p=0.25 (now π_prox 0.5):
    # weight min(0.5/0.25, C=1.5) = 1.5. Token 2: behaviour 0.8, prox 0.4 → weight 0.5.
    # The ratio is taken against π_prox: r1 = 0.6/0.5 = 1.2, r2 = 0.4/0.4 = 1 (A = +1).
    logp = _t([[LOG(0.6), LOG(0.4)]])
    prox = _t([[LOG(0.5), LOG(0.4)]])
    behav = _t([[LOG(0.25), LOG(0.8)]])
    mask = _t([[1.0, 1.0]])
    out = decoupled_ppo_loss(logp, prox, behav, _t([1.0]), mask, LossNormalizer.for_batch(mask),
                             is_cap=1.5, eps_low=0.2, eps_high=0.28)
    assert out.loss.item() == pytest.approx((-1.5 * 1.2 - 0.5 * 1.0) / 2)
    # No cap: the full weight 2.0 on token 1.
    uncapped = decoupled_ppo_loss(logp, prox, behav, _t([1.0]), mask, LossNormalizer.for_batch(mask),
                                  is_cap=100.0, eps_low=0.2, eps_high=0.28)
    assert uncapped.loss.item() == pytest.approx((-2.0 * 1.2 - 0.5 * 1.0) / 2)
