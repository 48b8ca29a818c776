"""Prompt templates: the system prompt, the first user turn, and how observations are shown.

The environment's first observation already carries the problem statement and the action
syntax, so the default templates only frame it. Templates are Jinja2 strings (the language
chat templates use) rendered with StrictUndefined, so a misspelt variable is an error, not
an empty string. Pick a built-in set by name or load one from a YAML file with the keys
`system`, `instance`, `observation`; override any single key in `AgentConfig.prompts`.

Variables: `instance` gets `observation` (the env's first observation), `task_id`; and
`observation` gets `observation`, `turn`, `turns_left`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict

from strictconfig import ConfigError, StrictModel

DEFAULT_SYSTEM = (
    "You are an expert software engineer fixing a bug in a Python repository. You work in a "
    "Linux shell through the actions described by the user. Be brief: think in one or two "
    "sentences, then give exactly one action."
)


class PromptTemplates(StrictModel):
    """A template set: Jinja2 sources for the system prompt, the first user turn and each observation."""

    model_config = ConfigDict(frozen=True)

    system: str = DEFAULT_SYSTEM
    """Empty: send no system message (the chat template may add its default)."""
    instance: str = "{{ observation }}"
    """The first user turn; variables: observation, task_id."""
    observation: str = "{{ observation }}"
    """Each later observation; variables: observation, turn, turns_left."""


BUILTIN_TEMPLATES: dict[str, PromptTemplates] = {
    "default": PromptTemplates(),
    # Small models lose the thread quickly: remind them of the remaining budget every turn.
    "budget": PromptTemplates(
        observation="{{ observation }}\n\n({{ turns_left }} turns left. One action per reply.)"
    ),
    # No system prompt at all: the chat template's own default applies (e.g. Qwen2's).
    "bare": PromptTemplates(system=""),
}


class PromptConfig(StrictModel):
    """Which template set to use, plus per-key overrides."""

    config_where: ClassVar[str] = "prompts"

    template: str = "default"
    """A built-in set (default, budget, bare) or a path to a YAML file with the keys system, instance, observation."""
    system: str | None = None
    """Overrides the set's system template."""
    instance: str | None = None
    """Overrides the set's first-user-turn template."""
    observation: str | None = None
    """Overrides the set's observation template."""

    def resolve(self) -> PromptTemplates:
        """The template set with the overrides applied; a template that does not compile is a ConfigError."""
        base = load_templates(self.template)
        overrides = {name: getattr(self, name) for name in PromptTemplates.model_fields}
        base = base.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        for name in ("system", "instance", "observation"):
            _compile(getattr(base, name), name)  # fail at start-up, not mid-episode
        return base


def load_templates(name_or_path: str) -> PromptTemplates:
    if name_or_path in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"prompt template '{name_or_path}' is neither a built-in "
            f"({', '.join(sorted(BUILTIN_TEMPLATES))}) nor a YAML file"
        )
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return PromptTemplates.from_config(data, where=f"prompt templates {path}")


def _compile(source: str, name: str) -> Any:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"prompt template '{name}': {exc}") from exc


def render_prompt(source: str, name: str, **variables: Any) -> str:
    import jinja2

    try:
        return _compile(source, name).render(**variables)
    except jinja2.UndefinedError as exc:
        raise ConfigError(
            f"prompt template '{name}': {exc}; available variables: {', '.join(sorted(variables))}"
        ) from exc


def initial_messages(templates: PromptTemplates, observation: str, *, task_id: str = "") -> list[dict[str, str]]:
    messages = []
    system = render_prompt(templates.system, "system", task_id=task_id) if templates.system else ""
    if system:
        messages.append({"role": "system", "content": system})
    messages.append(
        {
            "role": "user",
            "content": render_prompt(templates.instance, "instance", observation=observation, task_id=task_id),
        }
    )
    return messages


def observation_message(templates: PromptTemplates, observation: str, *, turn: int, turns_left: int) -> str:
    return render_prompt(
        templates.observation, "observation", observation=observation, turn=turn, turns_left=turns_left
    )
