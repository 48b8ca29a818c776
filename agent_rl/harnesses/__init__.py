"""Adapters that let outside agent harnesses play episodes through the gateway (see
agent_rl/rollout/harness.py): their model calls go to a recording session, their commands to
the episode's sandbox."""
