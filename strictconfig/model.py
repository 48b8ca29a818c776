"""`StrictModel`: the pydantic base class of every config."""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from strictconfig.errors import ConfigError, format_validation_error


class StrictModel(BaseModel):
    """A config section: unknown keys and wrongly typed values are errors naming the key.

    `strict=True` because YAML typos arrive as strings (`lr: fast`, `max_turns: "3"`) and a
    boolean is not a count; a field that must accept YAML lists for tuples opts out with
    `Field(strict=False)`. Attribute docstrings become field descriptions in the JSON schema.
    Validation errors are raised as `ConfigError` (a ValueError), prefixed with
    `config_where` (the section's name, e.g. "env") unless the caller passes its own.
    """

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)
    config_where: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, type(self), self.config_where)) from None

    # Tell pydantic this __init__ only converts errors: nested sections are then validated by
    # pydantic-core directly (as for BaseModel), so their errors keep their full dotted path.
    # pydantic's RootModel marks its own __init__ the same way.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, cls, cls.config_where)) from None

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | BaseModel | None, where: str | None = None) -> Any:
        """Build from a mapping (None = all defaults); an instance passes through unchanged."""
        if isinstance(data, cls):
            return data
        where = cls.config_where if where is None else where
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
        try:
            return super().model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, cls, where)) from None
