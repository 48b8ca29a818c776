"""Inference engines behind one async, token-in/token-out interface.

`base` holds the data types and the `Engine` protocol; `capabilities` declares what an engine
can do beyond generating (score logprobs, receive weights, load a checkpoint) and checks it.
"""
from agent_rl.engines.base import Engine, EngineError, Generation, SamplingParams
from agent_rl.engines.capabilities import EngineCapabilityError, capabilities, require

__all__ = ["Engine", "EngineCapabilityError", "EngineError", "Generation", "SamplingParams", "capabilities", "require"]
