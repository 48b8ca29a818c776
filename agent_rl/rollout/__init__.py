"""Rollouts: the multi-turn agent loop, chat-template token deltas, prompts, trajectories and the episode runner."""
