"""Fixtures shared by the agent_rl tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer, saved as an HF folder: `model.name` for
    training runs that need a real model and tokenizer but not a good one (fast on 2 cores)."""
    from agent_rl.engines.models import load_tokenizer, tiny_random_model

    tokenizer = load_tokenizer("smollm2-135m")
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_random_model({"vocab_size": len(tokenizer)}, model_type="llama", seed=0).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
