"""Inference engines behind one async, token-in/token-out interface."""
from agent_rl.engines.base import Engine, EngineError, Generation, SamplingParams

__all__ = ["Engine", "EngineError", "Generation", "SamplingParams"]
