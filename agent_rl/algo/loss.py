"""The DAPO objective and its variants, as pure functions over tensors.

Every tensor here is shaped [batch, time] and aligned with `response_ids`; `mask` is 1 only on
tokens the policy sampled. Nothing in this module touches a model or an optimizer, so each
formula can be checked against hand-computed values.

Aggregation is normalised by numbers computed over the *whole* optimizer mini-batch
(`LossNormalizer`), never per micro-batch: summing the micro-batch losses then gives exactly
the mini-batch loss, so gradient accumulation does not change the update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
LOSS_AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@dataclass(frozen=True)
class LossNormalizer:
    """Denominators for one optimizer mini-batch.

    num_tokens: sampled (mask=1) tokens in the mini-batch (token-mean).
    num_sequences: sequences in the mini-batch (the seq-mean modes).
    norm_length: Dr. GRPO's constant per-sequence length normaliser (the generation budget),
      so that long and short answers are not weighted differently.
    """

    num_tokens: int
    num_sequences: int
    norm_length: float = 1.0

    @classmethod
    def for_batch(cls, mask: torch.Tensor, norm_length: float = 1.0) -> "LossNormalizer":
        return cls(
            num_tokens=int(mask.sum().item()),
            num_sequences=int(mask.shape[0]),
            norm_length=float(norm_length),
        )


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions; 0 for an empty mask (rather than NaN)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def aggregate_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    normalizer: LossNormalizer,
) -> torch.Tensor:
    """Reduce a [B, T] per-token loss to a scalar for this (micro-)batch.

    token-mean:               Σ_i Σ_t l_it / N_tokens(mini-batch)                (DAPO)
    seq-mean-token-mean:      Σ_i (Σ_t l_it / |o_i|) / N_seqs(mini-batch)        (GRPO)
    seq-mean-token-sum-norm:  Σ_i (Σ_t l_it / L_norm) / N_seqs(mini-batch)       (Dr. GRPO)
    """
    mask = mask.to(per_token.dtype)
    if mode == "token-mean":
        return masked_sum(per_token, mask) / max(normalizer.num_tokens, 1)
    if mode == "seq-mean-token-mean":
        seq_len = mask.sum(dim=-1).clamp(min=1)
        return ((per_token * mask).sum(dim=-1) / seq_len).sum() / max(normalizer.num_sequences, 1)
    if mode == "seq-mean-token-sum-norm":
        seq_sum = (per_token * mask).sum(dim=-1) / normalizer.norm_length
        return seq_sum.sum() / max(normalizer.num_sequences, 1)
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {', '.join(LOSS_AGGREGATIONS)}")


@dataclass
class PolicyLossOutput:
    per_token: torch.Tensor  # [B, T] clipped surrogate loss (positive = to minimise)
    clip_low: torch.Tensor  # [B, T] bool: the lower clip bound is active (A < 0, r < 1-ε_low)
    clip_high: torch.Tensor  # [B, T] bool: the upper clip bound is active (A > 0, r > 1+ε_high)
    dual_clip: torch.Tensor  # [B, T] bool: the dual-clip bound is active
    ratio: torch.Tensor  # [B, T] π_θ / π_old


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip_c: float | None = None,
    is_weights: torch.Tensor | None = None,
) -> PolicyLossOutput:
    """Per-token DAPO surrogate: −min(r·Â, clip(r, 1−ε_low, 1+ε_high)·Â).

    `advantages` is [B] (one per sequence) or [B, T]. Clip-higher (ε_high > ε_low) leaves
    low-probability tokens room to grow, which is DAPO's remedy for entropy collapse.
    With `dual_clip_c` (> 1), the loss for negative advantages is also bounded by −c·Â, so a
    huge ratio on a bad token cannot blow up the update (Ye et al., dual-clip PPO).
    `is_weights` (detached, [B, T]) multiplies each token's loss: the truncated importance
    weight correcting for the engine/trainer mismatch.
    """
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1, got {dual_clip_c}")
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    advantages = advantages.to(logprobs.dtype)
    # Clamp the log-ratio before exp: a stray −inf/+inf logprob must not produce NaN gradients.
    log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    clip_low = (ratio < 1.0 - eps_low) & (advantages < 0)
    clip_high = (ratio > 1.0 + eps_high) & (advantages > 0)
    dual = torch.zeros_like(clip_low)
    if dual_clip_c is not None:
        bound = -advantages * dual_clip_c
        dual = (advantages < 0) & (loss > bound)
        loss = torch.where(advantages < 0, torch.minimum(loss, bound), loss)
    if is_weights is not None:
        loss = loss * is_weights.detach()
    return PolicyLossOutput(per_token=loss, clip_low=clip_low, clip_high=clip_high, dual_clip=dual, ratio=ratio)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(π_θ‖π_ref): exp(d) − d − 1 with d = log π_ref − log π_θ.

    Schulman's k3 estimator: unbiased, always ≥ 0, and low-variance, the usual choice for a
    KL penalty computed on sampled tokens only (ProRL, GRPO).
    """
    delta = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    return torch.exp(delta) - delta - 1.0


def approx_kl_to_old(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean k3 KL(π_θ‖π_old) over sampled tokens, for logging how far an update moved."""
    with torch.no_grad():
        return float(masked_mean(kl_k3(logprobs, old_logprobs), mask.to(logprobs.dtype)).item())


@dataclass
class ImportanceWeights:
    weights: torch.Tensor  # [B, T], 0 off-mask
    mean_abs_logprob_diff: float
    max_ratio: float
    fraction_capped: float


def truncated_is_weights(
    old_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    mask: torch.Tensor,
    cap: float,
) -> ImportanceWeights:
    """min(π_old_trainer / π_behaviour, C) per sampled token, plus mismatch statistics.

    The engine that sampled (vLLM, llama.cpp, a different dtype) and the trainer disagree a
    little on logprobs; truncated importance sampling corrects the gradient for it while the
    cap C bounds the variance.
    """
    if cap <= 0:
        raise ValueError(f"importance-sampling cap must be > 0, got {cap}")
    maskf = mask.to(old_logprobs.dtype)
    with torch.no_grad():
        diff = (old_logprobs - behaviour_logprobs).clamp(-20.0, 20.0)
        ratio = torch.exp(diff) * maskf
        weights = ratio.clamp(max=cap) * maskf
        n = maskf.sum().clamp(min=1)
        return ImportanceWeights(
            weights=weights,
            mean_abs_logprob_diff=float((diff.abs() * maskf).sum().div(n).item()),
            max_ratio=float(ratio.max().item()) if ratio.numel() else 0.0,
            fraction_capped=float(((ratio > cap) & (maskf > 0)).sum().div(n).item()),
        )


@dataclass
class DapoLossOutput:
    loss: torch.Tensor  # scalar to backpropagate for this micro-batch
    policy_loss: torch.Tensor
    kl_loss: torch.Tensor
    entropy_bonus: torch.Tensor
    clip_low_count: float  # masked tokens where the lower clip bound is active
    clip_high_count: float
    dual_clip_count: float
    kl_ref_sum: float  # Σ k3 KL to the reference over masked tokens (for logging)
    approx_kl_old_sum: float  # Σ k3 KL to the old policy over masked tokens
    entropy_sum: float
    num_tokens: float


def dapo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    normalizer: LossNormalizer,
    *,
    aggregation: str = "token-mean",
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip_c: float | None = None,
    is_weights: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> DapoLossOutput:
    """The full per-micro-batch objective: clipped surrogate + β·KL(π_θ‖π_ref) − c_H·H.

    All three terms share one aggregation and one batch-wide normaliser so that their
    relative scale does not depend on how the batch was split.
    """
    maskf = mask.to(logprobs.dtype)
    pg = policy_loss(
        logprobs, old_logprobs, advantages,
        eps_low=eps_low, eps_high=eps_high, dual_clip_c=dual_clip_c, is_weights=is_weights,
    )
    policy_term = aggregate_loss(pg.per_token, maskf, aggregation, normalizer)
    zero = logprobs.new_zeros(())
    kl_term, kl_ref_sum = zero, 0.0
    if ref_logprobs is not None:
        kl = kl_k3(logprobs, ref_logprobs)
        kl_ref_sum = float(masked_sum(kl.detach(), maskf).item())
        if kl_beta > 0:
            kl_term = kl_beta * aggregate_loss(kl, maskf, aggregation, normalizer)
    entropy_term, entropy_sum = zero, 0.0
    if entropy is not None:
        entropy_sum = float(masked_sum(entropy.detach(), maskf).item())
        if entropy_coef > 0:
            entropy_term = entropy_coef * aggregate_loss(entropy, maskf, aggregation, normalizer)
    with torch.no_grad():
        boolmask = maskf > 0
        approx_kl_old = masked_sum(kl_k3(logprobs.detach(), old_logprobs), maskf)
    return DapoLossOutput(
        loss=policy_term + kl_term - entropy_term,
        policy_loss=policy_term.detach(),
        kl_loss=kl_term.detach(),
        entropy_bonus=entropy_term.detach(),
        clip_low_count=float((pg.clip_low & boolmask).sum().item()),
        clip_high_count=float((pg.clip_high & boolmask).sum().item()),
        dual_clip_count=float((pg.dual_clip & boolmask).sum().item()),
        kl_ref_sum=kl_ref_sum,
        approx_kl_old_sum=float(approx_kl_old.item()),
        entropy_sum=entropy_sum,
        num_tokens=float(maskf.sum().item()),
    )


def decoupled_ppo_loss(
    logprobs: torch.Tensor,
    prox_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    normalizer: LossNormalizer,
    *,
    is_cap: float | None = 2.0,
    **dapo: Any,
) -> DapoLossOutput:
    """AReaL's decoupled PPO objective, with the rest of `dapo_loss` (clip-higher, dual clip,
    KL, entropy, aggregation) unchanged:

        −min(π_prox/π_behav, C) · min(r·Â, clip(r, 1−ε_low, 1+ε_high)·Â),   r = π_θ / π_prox

    π_behav is whatever sampled each token (an engine some versions behind, in asynchronous
    training; several versions within one episode), π_prox the trainer's policy before this
    update. The trust region is taken around π_prox, so however stale the data, one update
    cannot move the policy further than the clip allows; staleness enters only through the
    importance weight, truncated at C (`is_cap`; None: no correction, weight 1).

    With π_prox = π_behav the weight is 1 and this is `dapo_loss` exactly. The trainer's update
    always computes this: π_prox is its own logprobs before the update, π_behav the engine's.
    """
    weights = None
    if is_cap is not None:
        weights = truncated_is_weights(prox_logprobs, behaviour_logprobs, mask, is_cap).weights
    return dapo_loss(logprobs, prox_logprobs, advantages, mask, normalizer, is_weights=weights, **dapo)


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Masked cross-entropy for supervised fine-tuning: −Σ mask·log π(x_t | x_<t) / num_tokens.

    `logprobs` and `mask` are [B, T] (mask 1 on the tokens to learn: the assistant's / the
    policy's own tokens, never the environment's). `num_tokens` is the masked-token count of the
    whole optimizer batch, not of this micro-batch, so the micro-batch losses of a step sum to
    the token-mean over the batch (and bucketing the batch into micro-batches changes nothing).
    """
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    return -(logprobs * mask).sum() / num_tokens
