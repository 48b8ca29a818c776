"""VLLMEngine on a GPU: token-exact output, logprob convention, weight updates."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def vllm_engine():
    pytest.importorskip("vllm")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from agent_rl.engines.vllm import VLLMEngine

    engine = VLLMEngine("smollm2-135m", dtype="float32", gpu_memory_utilization=0.3, max_model_len=2048)
    yield engine


@pytest.fixture(scope="module")
def reference():
    from agent_rl.engines.hf import HFEngine

    engine = HFEngine("smollm2-135m", device="cuda", dtype="float32")
    yield engine
    engine.close_sync()


def prompt_ids(tokenizer) -> list[int]:
    return list(tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a fruit."}], add_generation_prompt=True, tokenize=True))


async def test_greedy_matches_hf_and_logprobs_agree(vllm_engine, reference):
    from agent_rl.engines.base import SamplingParams

    prompt = prompt_ids(reference.tokenizer)
    gen = await vllm_engine.generate(prompt, SamplingParams(temperature=0, max_tokens=8))
    assert len(gen.token_ids) == len(gen.logprobs) > 0
    expected = reference.compute_logprobs(prompt, gen.token_ids, temperature=1.0)
    assert max(abs(a - b) for a, b in zip(gen.logprobs, expected)) < 2e-2


async def test_seeded_sampling_and_temperature_convention(vllm_engine, reference):
    from agent_rl.engines.base import SamplingParams

    prompt = prompt_ids(reference.tokenizer)
    sampling = SamplingParams(temperature=0.7, max_tokens=8, seed=3)
    a, b = await vllm_engine.generate(prompt, sampling), await vllm_engine.generate(prompt, sampling)
    assert a.token_ids == b.token_ids
    if a.info["logprobs_mode"] == "processed_logprobs":
        expected = reference.compute_logprobs(prompt, a.token_ids, temperature=0.7)
        assert max(abs(x - y) for x, y in zip(a.logprobs, expected)) < 2e-2


async def test_update_weights_changes_outputs_and_version(vllm_engine, reference):
    from agent_rl.engines.base import SamplingParams

    prompt = prompt_ids(reference.tokenizer)
    greedy = SamplingParams(temperature=0, max_tokens=4)
    before = await vllm_engine.generate(prompt, greedy)
    weights = {k: v.clone() for k, v in reference.model.state_dict().items()}
    original = weights["model.norm.weight"].clone()
    weights["model.norm.weight"] = original * 0.1
    assert await vllm_engine.update_weights(weights.items()) == 1
    changed = await vllm_engine.generate(prompt, greedy)
    assert changed.logprobs != before.logprobs
    weights["model.norm.weight"] = original
    await vllm_engine.update_weights(weights.items(), version=5)
    restored = await vllm_engine.generate(prompt, greedy)
    assert restored.token_ids == before.token_ids and restored.info["policy_version"] == 5
