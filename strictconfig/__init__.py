"""Typed configuration models with errors a person can act on.

Every config in agent-rl (sandboxes, envs, the agent, engines, the trainer, eval) is a
`StrictModel`: a pydantic v2 model that rejects unknown keys and values of the wrong type,
and whose validation errors come back as one `ConfigError` naming the dotted path of each
bad key, with a "did you mean" for a misspelt one. This package depends on nothing but
pydantic, so every other package can build on it and the dependency arrows stay one way
(strictconfig <- sandboxes <- envs <- agent_rl).
"""
from strictconfig.digest import settings_digest
from strictconfig.errors import ConfigError, format_validation_error
from strictconfig.model import StrictModel

__all__ = ["ConfigError", "StrictModel", "format_validation_error", "settings_digest"]
