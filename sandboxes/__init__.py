"""Isolated, resettable workspaces where agent commands run.

Knows nothing of RL: `envs` builds on it, `agent_rl` builds on `envs`.
"""
from sandboxes.base import (
    ExecResult,
    ExecTimeout,
    HardeningUnsupported,
    Sandbox,
    SandboxDied,
    SandboxError,
)

__all__ = [
    "ExecResult",
    "ExecTimeout",
    "HardeningUnsupported",
    "Sandbox",
    "SandboxDied",
    "SandboxError",
]
