"""HFEngine against the real SmolLM2-135M-Instruct (and a random Qwen2-style model)."""
from __future__ import annotations

import asyncio
import math

import pytest
import torch

from agent_rl.engines.base import Engine, Generation, SamplingParams
from agent_rl.engines.hf import HFEngine, sample_next_token
from agent_rl.engines.models import load_model, tiny_random_model


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def engine(smollm):
    model, tokenizer = smollm
    eng = HFEngine(model, tokenizer, max_batch_size=8, batch_wait_ms=20)
    yield eng
    eng.close_sync()


def chat(tokenizer, text: str) -> list[int]:
    return list(tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    ))


def teacher_forced_logprobs(model, prompt_ids, completion_ids, temperature: float) -> list[float]:
    """Independent of the engine: one plain forward pass over prompt + completion."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    scaled = logits / (temperature if temperature > 0 else 1.0)
    logprobs = torch.log_softmax(scaled, dim=-1)
    return [float(logprobs[i, t]) for i, t in enumerate(completion_ids)]


def test_engine_satisfies_protocol(engine):
    assert isinstance(engine, Engine)
    assert engine.model is not None and engine.tokenizer is not None
    assert 2 in engine.eos_token_ids  # <|im_end|>, from the model's own metadata


async def test_greedy_is_deterministic_and_logprobs_match_forward(engine, smollm):
    prompt = chat(engine.tokenizer, "Name a fruit.")
    greedy = SamplingParams(temperature=0, max_tokens=6)
    first, second = await engine.generate(prompt, greedy), await engine.generate(prompt, greedy)
    assert first.token_ids == second.token_ids
    assert len(first.token_ids) == len(first.logprobs) >= 1
    expected = teacher_forced_logprobs(smollm[0], prompt, first.token_ids, temperature=0)
    assert max(abs(a - b) for a, b in zip(first.logprobs, expected)) < 1e-4
    assert first.text == engine.tokenizer.decode(first.token_ids)


async def test_seeded_sampling_reproduces_and_logprobs_use_temperature(engine, smollm):
    prompt = chat(engine.tokenizer, "Write one word.")
    sampling = SamplingParams(temperature=0.8, max_tokens=6, seed=1234)
    a, b = await engine.generate(prompt, sampling), await engine.generate(prompt, sampling)
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
    expected = teacher_forced_logprobs(smollm[0], prompt, a.token_ids, temperature=0.8)
    assert max(abs(x - y) for x, y in zip(a.logprobs, expected)) < 1e-4
    # The engine's own weight-sync check computes the same numbers.
    assert max(abs(x - y) for x, y in zip(engine.compute_logprobs(prompt, a.token_ids, 0.8),
                                          a.logprobs)) < 1e-4


async def test_concurrent_requests_are_batched_and_match_unbatched(engine):
    prompts = [chat(engine.tokenizer, q) for q in
               ("Hi!", "What is the capital of France?", "Count to three.", "Say yes.")]
    greedy = SamplingParams(temperature=0, max_tokens=5)
    alone = [await engine.generate(p, greedy) for p in prompts]
    batches_before = engine.stats["batches"]
    together = await asyncio.gather(*(engine.generate(p, greedy) for p in prompts))
    assert engine.stats["batches"] - batches_before < len(prompts)  # some were batched
    assert max(g.info["batch_size"] for g in together) > 1
    for single, batched in zip(alone, together):
        assert batched.token_ids == single.token_ids
        assert max(abs(x - y) for x, y in zip(batched.logprobs, single.logprobs)) < 1e-3
    # A seeded sample is the same alone and inside a batch (its own generator).
    seeded = SamplingParams(temperature=1.0, max_tokens=4, seed=7)
    solo = await engine.generate(prompts[1], seeded)
    mixed = await asyncio.gather(*(engine.generate(p, seeded) for p in prompts))
    assert mixed[1].token_ids == solo.token_ids


async def test_a_request_joins_a_running_batch_and_a_short_one_returns_first(engine):
    # Continuous batching: B arrives while A decodes, is merged into A's batch (its cache
    # left-padded), and is answered as soon as it is done, long before A.
    long_prompt = chat(engine.tokenizer, "Write a long story about a lighthouse keeper and the sea. " * 3)
    short_prompt = chat(engine.tokenizer, "Say yes.")
    long_sampling = SamplingParams(temperature=0, max_tokens=40, stop_token_ids=())
    short_sampling = SamplingParams(temperature=0, max_tokens=4)
    long_alone = await engine.generate(long_prompt, long_sampling)
    short_alone = await engine.generate(short_prompt, short_sampling)
    batches_before = engine.stats["batches"]
    long_task = asyncio.create_task(engine.generate(long_prompt, long_sampling))
    while engine.stats["batches"] == batches_before:  # A's batch is running
        await asyncio.sleep(0.01)
    short = await engine.generate(short_prompt, short_sampling)
    assert not long_task.done(), "the short request waited for the long one to finish"
    assert short.info["batch_size"] == 2  # it decoded inside A's batch
    long = await long_task
    # Same tokens as alone: the merged, left-padded cache changes nothing the model sees.
    assert short.token_ids == short_alone.token_ids and long.token_ids == long_alone.token_ids
    assert max(abs(x - y) for x, y in zip(short.logprobs, short_alone.logprobs)) < 1e-3
    assert max(abs(x - y) for x, y in zip(long.logprobs, long_alone.logprobs)) < 1e-3
    assert long.info["policy_version"] == short.info["policy_version"]


async def test_max_tokens_gives_length(engine):
    gen = await engine.generate(chat(engine.tokenizer, "Tell me a long story."),
                                SamplingParams(temperature=0, max_tokens=3))
    assert gen.finish_reason == "length" and len(gen.token_ids) == 3


async def test_eos_stops_and_is_kept(engine):
    gen = await engine.generate(chat(engine.tokenizer, "What is 2+2?"),
                                SamplingParams(temperature=0, max_tokens=40))
    assert gen.finish_reason == "stop"
    assert gen.token_ids[-1] == engine.tokenizer.eos_token_id  # sampled, so it is trained on
    assert "<|im_end|>" not in gen.text


async def test_stop_token_ids_and_stop_strings(engine):
    prompt = chat(engine.tokenizer, "Name a fruit.")
    greedy = SamplingParams(temperature=0, max_tokens=6)
    reference = await engine.generate(prompt, greedy)
    second = reference.token_ids[1]
    by_id = await engine.generate(prompt, SamplingParams(temperature=0, max_tokens=6,
                                                         stop_token_ids=(second,)))
    assert by_id.finish_reason == "stop" and by_id.token_ids == reference.token_ids[:2]
    assert by_id.info["stop_reason"] == second
    stop_text = reference.text.strip()[-3:]
    by_text = await engine.generate(prompt, SamplingParams(temperature=0, max_tokens=6,
                                                           stop=(stop_text,)))
    assert by_text.finish_reason == "stop" and by_text.info["stop_reason"] == stop_text
    assert by_text.token_ids == reference.token_ids[: len(by_text.token_ids)]
    assert by_text.text == reference.text[: reference.text.find(stop_text)]


async def test_context_window_limits(smollm):
    model, tokenizer = smollm
    small = HFEngine(model, tokenizer, context_window=16)
    try:
        too_long = await small.generate(list(range(100, 120)), SamplingParams(max_tokens=4))
        assert too_long.finish_reason == "length" and too_long.token_ids == []
        cut = await small.generate(list(range(100, 113)), SamplingParams(temperature=0, max_tokens=10))
        assert cut.finish_reason == "length" and len(cut.token_ids) == 3  # 13 + 3 = 16
    finally:
        await small.close()


async def test_bad_prompts_are_clear_errors(engine):
    with pytest.raises(ValueError, match="empty"):
        await engine.generate([], SamplingParams())
    with pytest.raises(ValueError, match="outside"):
        await engine.generate([1, 10**9], SamplingParams())


async def test_weight_updates_bump_policy_version(engine):
    prompt = chat(engine.tokenizer, "Hi!")
    before = engine.policy_version
    with engine.weights_locked():
        pass  # a trainer would step its optimizer here
    assert engine.weights_updated() == before + 1
    assert engine.load_state_dict(engine.model.state_dict(), version=before + 5) == before + 5
    gen = await engine.generate(prompt, SamplingParams(temperature=0, max_tokens=1))
    assert gen.info["policy_version"] == before + 5


async def test_random_qwen2_model_works(smollm):
    tokenizer = smollm[1]
    model = tiny_random_model({"vocab_size": len(tokenizer)}, model_type="qwen2")
    assert type(model).__name__ == "Qwen2ForCausalLM"
    eng = HFEngine(model, tokenizer, batch_wait_ms=20)
    try:
        prompts = [chat(tokenizer, "Hello"), chat(tokenizer, "A longer question to pad the batch?")]
        greedy = SamplingParams(temperature=0, max_tokens=5)
        alone = [await eng.generate(p, greedy) for p in prompts]
        together = await asyncio.gather(*(eng.generate(p, greedy) for p in prompts))
        assert [g.token_ids for g in together] == [g.token_ids for g in alone]
        expected = teacher_forced_logprobs(model, prompts[0], alone[0].token_ids, temperature=0)
        assert max(abs(a - b) for a, b in zip(alone[0].logprobs, expected)) < 1e-4
    finally:
        await eng.close()


async def test_closed_engine_refuses(smollm):
    eng = HFEngine(*smollm)
    await eng.close()
    with pytest.raises(Exception, match="closed"):
        await eng.generate([1, 2, 3], SamplingParams(max_tokens=1))


# ----- the sampling rule, on synthetic logits -------------------------------------------------


def test_sample_next_token_greedy_and_temperature():
    logits = torch.tensor([1.0, 3.0, 2.0])
    token, logprob = sample_next_token(logits, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert token == 1 and math.isclose(logprob, float(torch.log_softmax(logits, -1)[1]), abs_tol=1e-6)
    token, logprob = sample_next_token(logits, 0.5, 1.0, torch.Generator().manual_seed(0))
    assert math.isclose(logprob, float(torch.log_softmax(logits / 0.5, -1)[token]), abs_tol=1e-6)


def test_sample_next_token_top_p_renormalizes_over_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    seen = set()
    for seed in range(200):
        token, logprob = sample_next_token(logits, 1.0, 0.7, torch.Generator().manual_seed(seed))
        seen.add(token)
        # Nucleus for 0.7 is {0, 1} (0.5 < 0.7 <= 0.8): probabilities 0.5/0.8 and 0.3/0.8.
        assert math.isclose(logprob, math.log([0.5, 0.3][token] / 0.8), abs_tol=1e-5)
    assert seen == {0, 1}


def test_generation_shape_is_the_contract():
    gen = Generation([1], [-0.5], "stop")
    assert gen.text_mode is False and gen.info == {}
