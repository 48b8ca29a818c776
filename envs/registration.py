"""Gymnasium registration of `agent_rl/SWE-v0`.

The entry point is a string, so registering imports nothing from the environment itself;
`gymnasium.make("agent_rl/SWE-v0", tasks=..., config=...)` imports `envs.swe_env` on use.
"""
from __future__ import annotations

ENV_ID = "agent_rl/SWE-v0"


def register_envs() -> None:
    import gymnasium

    if ENV_ID not in gymnasium.registry:  # idempotent: re-registering would warn
        # The passive checker would test every observation character by character against a
        # 63k-character charset on each step; tests/envs runs the full check_env instead.
        gymnasium.register(id=ENV_ID, entry_point="envs.swe_env:SWEEnv", disable_env_checker=True)
