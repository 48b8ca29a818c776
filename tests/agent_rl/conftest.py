"""Fixtures shared by the agent_rl tests."""
from __future__ import annotations

import time
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


@pytest.fixture
def wait_for_file():
    """`wait(proc, path, timeout_s)`: poll until `path` exists, failing if `proc` (a Popen with
    stdout piped) ends first or the time runs out; for tests that act once a run checkpoints."""

    def wait(proc, path: Path, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            assert proc.poll() is None, f"the run ended before {path} existed:\n{proc.stdout.read()[-4000:]}"
            assert time.monotonic() < deadline, f"no {path} within {timeout_s:.0f}s"
            time.sleep(0.2)

    return wait
