"""The config tree of one `agent-rl rollout` run (the command's flags are shortcuts into it)."""
from __future__ import annotations

from pydantic import Field, model_validator

from agent_rl.engines.factory import EngineConfig
from agent_rl.engines.models import DEFAULT_MODEL
from agent_rl.rollout.agent import AgentConfig
from agent_rl.rollout.runner import RolloutConfig
from envs.swe_env import EnvConfig
from strictconfig import StrictModel


class RolloutRunConfig(StrictModel):
    """`agent-rl rollout`'s whole configuration: which model plays which tasks, how, and where
    the trajectories go."""

    model: str = DEFAULT_MODEL
    """Model alias or local HF checkpoint; the engine's model and tokenizer unless engine.model is set."""
    tasks: str
    """Task spec: builtin, builtin:easy, builtin:<suite>[:<difficulty>], or a .jsonl file."""
    limit: int | None = Field(None, ge=1)
    """Use only the first N tasks."""
    out: str
    """Output directory."""
    seed: int | None = None
    """Episode i samples with seed+i; None: agent.sampling.seed."""
    engine: EngineConfig = Field(default_factory=EngineConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    rollout: RolloutConfig = Field(default_factory=lambda: RolloutConfig(group_size=1))
    """group_size defaults to 1 here: one episode per task unless asked for more."""

    @model_validator(mode="after")
    def _engine_serves_the_model(self) -> "RolloutRunConfig":
        self.engine = self.engine.serving(self.model)
        return self
