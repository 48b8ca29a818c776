"""Per-token logprobs and entropy of a causal LM, computed in chunks on masked positions only.

A multi-turn trajectory is long, and the full [T, vocab] logits tensor of a 4k-token
trajectory with a 50k vocabulary is 800 MB in fp32, more with its gradient. So the decoder
runs once to get hidden states, and the lm_head + log_softmax run only on the positions
whose token the policy sampled, `chunk_size` positions at a time. With gradients enabled,
each chunk is recomputed in the backward pass (activation checkpointing), so at most one
chunk of logits is alive at any moment.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint


@dataclass
class TokenScores:
    logprobs: torch.Tensor  # [B, T] float32, log π(x_t | x_<t) at masked positions, 0 elsewhere
    entropy: torch.Tensor | None  # [B, T] float32 entropy of π(· | x_<t) at masked positions


def _chunk_scores(
    hidden: torch.Tensor, targets: torch.Tensor, lm_head: torch.nn.Module, temperature: float, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    # Same convention as the engines' behaviour logprobs: log_softmax(logits / temperature).
    logits = lm_head(hidden).float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if with_entropy:
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    else:
        entropy = torch.zeros_like(logp)
    return logp, entropy


def token_scores(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    score_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    with_entropy: bool = False,
) -> TokenScores:
    """Score `input_ids[b, t]` under the model for every position where `score_mask[b, t]` is 1.

    input_ids/attention_mask/score_mask: [B, T], right-padded. Position 0 can never be scored
    (nothing precedes it). Works for plain HF causal LMs and peft-wrapped ones: the decoder is
    found with `get_decoder()` and the head with `get_output_embeddings()`.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if input_ids.shape != score_mask.shape or input_ids.shape != attention_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} and "
            f"score_mask {tuple(score_mask.shape)} must have the same shape"
        )
    decoder = model.get_decoder()
    lm_head = model.get_output_embeddings()
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    batch_idx, pos_idx = score_mask[:, 1:].nonzero(as_tuple=True)
    pos_idx = pos_idx + 1
    selected = hidden[batch_idx, pos_idx - 1]  # the hidden state *before* each scored token
    targets = input_ids[batch_idx, pos_idx]
    logp_parts, entropy_parts = [], []
    for start in range(0, selected.shape[0], chunk_size):
        h = selected[start : start + chunk_size]
        y = targets[start : start + chunk_size]
        if torch.is_grad_enabled():
            lp, ent = checkpoint(_chunk_scores, h, y, lm_head, temperature, with_entropy, use_reentrant=False)
        else:
            lp, ent = _chunk_scores(h, y, lm_head, temperature, with_entropy)
        logp_parts.append(lp)
        entropy_parts.append(ent)
    shape = input_ids.shape
    logprobs = hidden.new_zeros(shape, dtype=torch.float32)
    entropy = hidden.new_zeros(shape, dtype=torch.float32) if with_entropy else None
    if logp_parts:
        logprobs = logprobs.index_put((batch_idx, pos_idx), torch.cat(logp_parts))
        if entropy is not None:
            entropy = entropy.index_put((batch_idx, pos_idx), torch.cat(entropy_parts))
    return TokenScores(logprobs=logprobs, entropy=entropy)
