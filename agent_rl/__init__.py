"""Learning: the multi-turn agent loop, inference engines, rollouts, the DAPO trainer, evaluation."""
__version__ = "0.1.0"
