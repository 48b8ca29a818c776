"""StrictModel: unknown keys, types and ranges come back as one ConfigError naming each path."""
from __future__ import annotations

from typing import ClassVar, Literal

import pytest
from pydantic import Field, model_validator

from strictconfig import ConfigError, StrictModel


class Leaf(StrictModel):
    """A nested section."""

    config_where: ClassVar[str] = "leaf"

    count: int = Field(1, ge=1)
    mode: Literal["a", "b"] = "a"

    @model_validator(mode="after")
    def _b_needs_two(self) -> "Leaf":
        if self.mode == "b" and self.count < 2:
            raise ValueError("mode 'b' needs count >= 2")
        return self


class Root(StrictModel):
    """The top of a tree."""

    leaf: Leaf = Field(default_factory=Leaf)
    leaves: list[Leaf] = Field(default_factory=list)
    named: dict[str, Leaf] = Field(default_factory=dict)
    rate: float = 0.5


def test_paths_through_lists_dicts_and_nested_sections():
    with pytest.raises(ConfigError) as info:
        Root.from_config({"leaves": [{}, {"cuont": 2}], "named": {"x": {"mod": "b"}}}, "run")
    assert str(info.value) == (
        "run.leaves[1]: unknown key(s) 'cuont' (did you mean 'count'?); valid keys: count, mode; "
        "run.named.x: unknown key(s) 'mod' (did you mean 'mode'?); valid keys: count, mode"
    )


def test_every_problem_is_reported_and_unknown_keys_are_grouped():
    with pytest.raises(ConfigError) as info:
        Root.from_config({"rate": "high", "leaf": {"count": 0, "zzz": 1, "mdoe": "a"}, "extra": 1})
    message = str(info.value)
    assert "rate must be a number, got 'high'" in message
    assert "leaf.count must be >= 1, got 0" in message
    assert "leaf: unknown key(s) 'zzz', 'mdoe' (did you mean 'mode'?)" in message
    assert "top level: unknown key(s) 'extra'" in message


def test_direct_construction_and_validators_raise_config_error_with_the_section_name():
    with pytest.raises(ConfigError, match=r"^leaf: mode 'b' needs count >= 2$"):
        Leaf(mode="b")
    with pytest.raises(ConfigError, match=r"^leaf.mode 'c' is not one of a, b$"):
        Leaf.model_validate({"mode": "c"})
    with pytest.raises(ConfigError, match=r"^leaf.count must be an integer, got True$"):
        Leaf(count=True)  # strict: a boolean is not a count
    with pytest.raises(ConfigError, match="expected a mapping, got list"):
        Root.from_config([1])
    leaf = Leaf(count=3)
    assert Leaf.from_config(leaf) is leaf and Root.from_config(None) == Root()
    assert issubclass(ConfigError, ValueError)
