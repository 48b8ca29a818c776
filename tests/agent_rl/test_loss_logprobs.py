"""Chunked masked logprobs/entropy agree with the naive full-logits computation."""
from __future__ import annotations

import pytest
import torch

from agent_rl.algo.logprobs import token_scores
from agent_rl.engines.models import tiny_random_model


@pytest.fixture(scope="module")
def model():
    return tiny_random_model({"vocab_size": 97}, model_type="llama", seed=3)


def _batch():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 97, (2, 9), generator=gen)
    attn = torch.ones_like(ids)
    attn[1, 7:] = 0  # right padding
    score = torch.zeros_like(ids)
    score[0, 3:6] = 1
    score[0, 8] = 1
    score[1, 2:7] = 1
    return ids, attn, score


def _naive(model, ids, attn, score, temperature):
    logits = model(input_ids=ids, attention_mask=attn).logits.float() / temperature
    logp_all = torch.log_softmax(logits[:, :-1], dim=-1)
    logp = logp_all.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    pad = torch.zeros(ids.shape[0], 1)
    m = score.float()
    return torch.cat([pad, logp], 1) * m, torch.cat([pad, ent], 1) * m


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_matches_full_logits(model, chunk):
    ids, attn, score = _batch()
    with torch.no_grad():
        got = token_scores(model, ids, attn, score, temperature=0.7, chunk_size=chunk, with_entropy=True)
        want_lp, want_ent = _naive(model, ids, attn, score, 0.7)
    torch.testing.assert_close(got.logprobs, want_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.entropy, want_ent, atol=1e-5, rtol=1e-5)
    assert (got.logprobs[score == 0] == 0).all()


def test_gradients_match_naive(model):
    ids, attn, score = _batch()
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    token_scores(model, ids, attn, score, chunk_size=2).logprobs.sum().backward()
    chunked = [p.grad.clone() for p in params]
    model.zero_grad()
    _naive(model, ids, attn, score, 1.0)[0].sum().backward()
    for a, p in zip(chunked, params):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)
    model.zero_grad()


def test_empty_score_mask_and_bad_shapes(model):
    ids, attn, score = _batch()
    out = token_scores(model, ids, attn, torch.zeros_like(score))
    assert out.logprobs.abs().sum() == 0 and out.entropy is None
    with pytest.raises(ValueError, match="same shape"):
        token_scores(model, ids, attn[:, :-1], score)
    with pytest.raises(ValueError, match="temperature"):
        token_scores(model, ids, attn, score, temperature=0)
