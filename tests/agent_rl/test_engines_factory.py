"""make_engine / EngineConfig: strict configs and the three engine kinds."""
from __future__ import annotations

import importlib.util

import pytest

from agent_rl.engines.factory import EngineConfig, engine_config, make_engine
from agent_rl.engines.hf import HFEngine
from agent_rl.engines.openai_http import OpenAIEngine, normalize_base_url
from agent_rl.engines.models import ModelNotFoundError, resolve_checkpoint, tiny_random_model
from strictconfig import ConfigError


def test_unknown_keys_and_bad_values_are_named():
    with pytest.raises(ConfigError, match="max_batch_sise.*did you mean 'max_batch_size'"):
        engine_config({"kind": "hf", "max_batch_sise": 4})
    with pytest.raises(ConfigError, match="engine.kind 'tgi'"):
        engine_config({"kind": "tgi"})
    with pytest.raises(ConfigError, match="base_url is required"):
        engine_config({"kind": "openai"})


async def test_hf_engine_shares_a_given_model():
    model = tiny_random_model({"vocab_size": 128}, model_type="llama")
    engine = make_engine({"kind": "hf", "max_batch_size": 2}, model=model)
    try:
        assert isinstance(engine, HFEngine) and engine.model is model and engine.max_batch_size == 2
    finally:
        await engine.close()


async def test_openai_engine_from_config():
    engine = make_engine(EngineConfig(kind="openai", base_url="http://127.0.0.1:9/v1/", model="m"))
    assert isinstance(engine, OpenAIEngine) and engine.base_url == "http://127.0.0.1:9"
    await engine.close()
    with pytest.raises(ValueError, match="http"):
        normalize_base_url("127.0.0.1:8000")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_missing_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'agent-rl\[vllm\]'"):
        make_engine({"kind": "vllm"})


def test_unknown_model_spec_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither a known alias"):
        resolve_checkpoint(tmp_path / "nothing-here")
