"""One policy update on a rollout batch: the trainer's step 5, as a free function.

`update_step(model, optimizer, batch, settings)`:

  1. old logprobs once per rollout batch (skipped when a single optimizer step is taken: the
     policy has not moved when a row is scored, so its own detached logprobs are its old ones)
  2. reference logprobs once, when a reference model is given (the KL term)
  3. ppo_epochs × shuffled mini-batches; each mini-batch is one optimizer step, accumulated
     over micro-batches and normalized by the whole mini-batch, so the micro-batch split
     cannot change the gradient
  4. the loss per micro-batch: DAPO in its decoupled form (agent_rl.algo.loss.decoupled_ppo_loss:
     clipped around the old/proximal logprobs, truncated IS to the engine's behaviour logprobs),
     gradient clipping, optimizer step

It touches only what it is given: no engine, no rollouts, no I/O. The formulas live in
agent_rl.algo; this module orders them.

Data parallel (N ranks, train/distributed): every rank holds the whole batch and trains on
its strided share of each mini-batch (algo/microbatch.py). The loss is normalized by the
whole mini-batch on every rank, so the ranks' partial losses add up to the one-process loss;
FSDP averages gradients over ranks, so each rank scales its backward by N to make the sum.
Every rank runs the same number of forward/backward passes (a rank with fewer rows runs
zero-weight passes), because each pass is a collective.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from agent_rl.algo.batch import TrainBatch
from agent_rl.analysis.phases import PHASE_SUM_KEYS, phase_means, phase_sums
from agent_rl.algo.logprobs import TokenScores
from agent_rl.algo.loss import LossNormalizer, decoupled_ppo_loss, truncated_is_weights
from agent_rl.algo.microbatch import plan_micro_batches, split_for_ranks
from agent_rl.train.distributed.fsdp import as_local_float, score, set_gradient_sync
from agent_rl.train.distributed.ranks import Ranks


@dataclass(frozen=True)
class UpdateSettings:
    """What an update needs besides the model, optimizer and batch.

    `algorithm` is the train config's `algorithm` section (loss, clipping, batch geometry);
    `temperature` is the sampling temperature the behaviour logprobs were taken at.
    """

    algorithm: Any
    temperature: float
    grad_clip: float
    device: str | torch.device = "cpu"
    logprob_chunk_size: int = 1024
    ranks: Ranks = Ranks()

    @classmethod
    def from_config(cls, config: Any, *, temperature: float, device: str | torch.device,
                    ranks: Ranks = Ranks()) -> "UpdateSettings":
        """From a TrainConfig (`algorithm`, `optim.grad_clip`, `model.logprob_chunk_size`)."""
        return cls(algorithm=config.algorithm, temperature=temperature, grad_clip=config.optim.grad_clip,
                   device=device, logprob_chunk_size=config.model.logprob_chunk_size, ranks=ranks)

    def micro_batches(self, rows: list[int], batch: TrainBatch) -> list[list[int]]:
        """This rank's micro-batches of `rows`, padded with [] up to the most any rank has."""
        mine = split_for_ranks(rows, self.ranks.rank, self.ranks.world_size)
        budget = self.algorithm.micro_batch_tokens
        lengths = batch.attention_mask.sum(dim=1).tolist() if budget is not None else []
        groups = plan_micro_batches(mine, lengths, self.algorithm.micro_batch_size, budget)
        return groups + [[]] * (self.ranks.max_int(len(groups)) - len(groups))


@dataclass
class UpdateStats:
    """Sums over every micro-batch of an update (divided by tokens at the end)."""

    tokens: float = 0.0
    clip_low: float = 0.0
    clip_high: float = 0.0
    dual_clip: float = 0.0
    kl_ref: float = 0.0
    kl_old: float = 0.0
    entropy: float = 0.0
    loss_sum: float = 0.0
    optimizer_steps: int = 0
    grad_norms: list[float] | None = None
    # Σ entropy / logprob and token counts per phase (planning, execution) when the batch has a
    # phase mask; PHASE_SUM_KEYS name them.
    phases: dict[str, float] | None = None

    def all_ranks(self, ranks: Ranks) -> None:
        """Sum the counters over ranks (each rank saw only its share of the rows)."""
        names = ["tokens", "clip_low", "clip_high", "dual_clip", "kl_ref", "kl_old", "entropy", "loss_sum"]
        if self.phases is not None:
            summed = ranks.sum_(torch.tensor([self.phases[k] for k in PHASE_SUM_KEYS], dtype=torch.float64))
            self.phases = dict(zip(PHASE_SUM_KEYS, summed.tolist()))
        summed = ranks.sum_(torch.tensor([float(getattr(self, n)) for n in names], dtype=torch.float64))
        for name, value in zip(names, summed.tolist()):
            setattr(self, name, value)

    def add(self, out: Any, phases: dict[str, float] | None = None) -> None:
        if phases is not None:
            self.phases = {k: (self.phases or {}).get(k, 0.0) + phases[k] for k in PHASE_SUM_KEYS}
        self.tokens += out.num_tokens
        self.clip_low += out.clip_low_count
        self.clip_high += out.clip_high_count
        self.dual_clip += out.dual_clip_count
        self.kl_ref += out.kl_ref_sum
        self.kl_old += out.approx_kl_old_sum
        self.entropy += out.entropy_sum
        self.loss_sum += float(out.loss.detach().item())


def _scores(model: torch.nn.Module, batch: TrainBatch, settings: UpdateSettings, with_entropy: bool = False) -> TokenScores:
    dev = settings.device
    return score(
        model,
        batch.input_ids.to(dev),
        batch.attention_mask.to(dev),
        batch.score_mask.to(dev),
        temperature=settings.temperature,
        chunk_size=settings.logprob_chunk_size,
        with_entropy=with_entropy,
    )


@torch.no_grad()
def frozen_logprobs(model: torch.nn.Module, batch: TrainBatch, settings: UpdateSettings) -> torch.Tensor:
    """Logprobs of a fixed policy (old or reference) for every row, micro-batch by micro-batch
    (each rank scores its share; the shares are summed so every rank has every row)."""
    model.eval()
    out = torch.zeros_like(batch.score_mask)
    for group in settings.micro_batches(list(range(len(batch))), batch):
        index = torch.tensor(group or [0])
        rows = batch.rows(index)
        scores = _scores(model, rows, settings).logprobs.cpu()
        if group:  # a padding pass (no rows of this rank left) only keeps the collectives in step
            out[index, : rows.input_ids.shape[1]] = scores
    return settings.ranks.sum_(out) if settings.ranks.distributed else out


def update_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: TrainBatch,
    settings: UpdateSettings,
    *,
    reference: torch.nn.Module | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the optimizer steps of one trainer step on `batch`; returns the update's metrics.

    `seed` fixes the mini-batch shuffle (the trainer derives it from its seed and the step, so
    a resumed run shuffles like the uninterrupted one). `reference`, when given, is scored for
    the KL term and its metric. The model is left in eval mode. Metrics: loss, entropy,
    clip_fraction_low/high, dual_clip_fraction, approx_kl_old, kl_ref, the IS mismatch between
    engine and trainer (is_*), grad_norm (mean over optimizer steps), optimizer_steps,
    trained_tokens.
    """
    alg = settings.algorithm
    one_pass = alg.ppo_epochs == 1 and len(batch) <= alg.mini_batch_size
    old_logprobs = torch.zeros_like(batch.score_mask) if one_pass else frozen_logprobs(model, batch, settings)
    ref_logprobs = frozen_logprobs(reference, batch, settings) if reference is not None else None

    stats = UpdateStats(grad_norms=[])
    generator = torch.Generator().manual_seed(seed)
    mini = min(alg.mini_batch_size, len(batch))
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    for _ in range(alg.ppo_epochs):
        order = torch.randperm(len(batch), generator=generator)
        for mb_start in range(0, len(batch), mini):
            mb_index = order[mb_start : mb_start + mini]
            # Normalise by the whole mini-batch, so neither the micro-batch split nor the rank
            # split can change the gradient.
            normalizer = LossNormalizer.for_batch(batch.score_mask[mb_index], alg.norm_length)
            optimizer.zero_grad(set_to_none=True)
            groups = settings.micro_batches(mb_index.tolist(), batch)
            for i, group in enumerate(groups):
                set_gradient_sync(model, i == len(groups) - 1)
                out, phases = _micro_step(model, batch, group, old_logprobs, ref_logprobs, normalizer, settings,
                                          one_pass)
                if group:
                    stats.add(out, phases)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
            optimizer.step()
            stats.optimizer_steps += 1
            stats.grad_norms.append(as_local_float(grad_norm))
    model.eval()
    if settings.ranks.distributed:
        # Every rank holds the same batch, so all have a phase mask or none do (the sum is a collective).
        if batch.phase_mask is not None and stats.phases is None:
            stats.phases = dict.fromkeys(PHASE_SUM_KEYS, 0.0)
        stats.all_ranks(settings.ranks)
        if one_pass:  # each rank filled in its own rows' logprobs
            settings.ranks.sum_(old_logprobs)
    mismatch = truncated_is_weights(old_logprobs, batch.behaviour_logprobs, batch.score_mask, alg.tis_cap or 1.0)
    tokens = max(stats.tokens, 1.0)
    return {
        "loss": stats.loss_sum / max(stats.optimizer_steps, 1),
        "entropy": stats.entropy / tokens,
        "clip_fraction_low": stats.clip_low / tokens,
        "clip_fraction_high": stats.clip_high / tokens,
        "dual_clip_fraction": stats.dual_clip / tokens,
        "approx_kl_old": stats.kl_old / tokens,
        "kl_ref": stats.kl_ref / tokens if reference is not None else None,
        "is_mismatch_mean_abs_logprob_diff": mismatch.mean_abs_logprob_diff,
        "is_max_ratio": mismatch.max_ratio,
        "is_fraction_capped": mismatch.fraction_capped if alg.tis_cap is not None else None,
        "grad_norm": sum(stats.grad_norms) / len(stats.grad_norms),
        "optimizer_steps": stats.optimizer_steps,
        "trained_tokens": int(batch.score_mask.sum().item()),
        **_phase_metrics(stats.phases),
    }


def _phase_metrics(sums: dict[str, float] | None) -> dict[str, Any]:
    """planning_/execution_ entropy and logprob (per-token means over every micro-step, like
    `entropy`) and the planning share of the phased tokens; {} without a phase mask."""
    if sums is None:
        return {}
    phased = sums["planning_tokens"] + sums["execution_tokens"]
    return {**phase_means(sums), "planning_token_fraction": sums["planning_tokens"] / phased if phased else None}


def _micro_step(model, batch, group, old_logprobs, ref_logprobs, normalizer, settings: UpdateSettings,
                one_pass: bool):
    """Forward, DAPO loss and backward for one micro-batch (gradients accumulate); returns the
    loss output and, when the batch has a phase mask, the per-phase sums (metrics only).

    An empty `group` is a padding pass: it runs row 0 with zero weight so this rank joins the
    collectives of a step where other ranks still have rows.
    """
    alg, dev = settings.algorithm, settings.device
    index = torch.tensor(group or [0])
    rows = batch.rows(index)
    width = rows.input_ids.shape[1]
    scores = _scores(model, rows, settings, with_entropy=True)
    if one_pass:
        old = scores.logprobs.detach()
        if group:
            old_logprobs[index, :width] = old.cpu()
    else:
        old = old_logprobs[index, :width].to(dev)
    mask = rows.score_mask.to(dev)
    # The old logprobs are the proximal policy; the engine's behaviour logprobs (per token: an
    # asynchronous episode may span weight versions) enter through the truncated IS weight.
    out = decoupled_ppo_loss(
        scores.logprobs,
        old,
        rows.behaviour_logprobs.to(dev),
        rows.advantages.to(dev),
        mask,
        normalizer,
        is_cap=alg.tis_cap,
        aggregation=alg.loss_aggregation,
        eps_low=alg.eps_low,
        eps_high=alg.eps_high,
        dual_clip_c=alg.dual_clip_c,
        ref_logprobs=ref_logprobs[index, :width].to(dev) if ref_logprobs is not None else None,
        kl_beta=alg.kl_beta,
        entropy=scores.entropy,
        entropy_coef=alg.entropy_coef,
    )
    # FSDP averages gradients over ranks; the loss is already a share of the whole mini-batch's,
    # so scaling by N makes the average the sum. A padding pass contributes nothing.
    scale = settings.ranks.world_size if group else 0.0
    (out.loss * scale if scale != 1 else out.loss).backward()
    phases = None
    if rows.phase_mask is not None and scores.entropy is not None:
        phases = phase_sums(scores.entropy, scores.logprobs, mask, rows.phase_mask.to(dev))
    return out, phases
