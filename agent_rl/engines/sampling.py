"""The sampling and logprob convention every engine and the trainer share.

`logprobs[i]` is log_softmax(logits / temperature)[token_ids[i]], renormalized over the
nucleus when top_p < 1. For temperature 0 (greedy) it is log_softmax(logits)[token]. No top-k
or min-p is applied: truncating the distribution would make the behaviour logprobs disagree
with the trainer's (arXiv 2508.03501).
"""
from __future__ import annotations

import torch


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> tuple[int, float]:
    """Sample one token from a row of logits; return (token, behaviour logprob).

    Pure function of its inputs (and the generator state): the logprob convention lives here.
    """
    logits = logits.float()
    if temperature == 0:
        logprobs = torch.log_softmax(logits, dim=-1)
        token = int(torch.argmax(logits))
        return token, float(logprobs[token])
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_lp, order = torch.sort(logprobs, descending=True)
        cumulative = torch.cumsum(sorted_lp.exp(), dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        keep = (cumulative - sorted_lp.exp()) < top_p
        kept_lp = sorted_lp[keep]
        kept_lp = kept_lp - torch.logsumexp(kept_lp, dim=-1)
        choice = torch.multinomial(kept_lp.exp(), 1, generator=generator)
        return int(order[keep][choice]), float(kept_lp[choice])
    choice = int(torch.multinomial(logprobs.exp(), 1, generator=generator))
    return choice, float(logprobs[choice])
