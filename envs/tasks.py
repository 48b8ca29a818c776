"""Task: the SWE-bench fields plus what execution needs.

Loaders (JSONL in SWE-bench's format, HF datasets, builtin suites) live below the Task
definition. Every validation error names the task and the field.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping


class TaskError(ValueError):
    """A malformed task; the message names the task id and the offending field."""


def _as_test_list(value: Any, instance_id: str, name: str) -> list[str]:
    # SWE-bench ships FAIL_TO_PASS / PASS_TO_PASS as JSON-encoded strings; accept both.
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise TaskError(f"task {instance_id!r}: field {name} is not a JSON list: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskError(f"task {instance_id!r}: field {name} must be a list of test ids")
    return list(value)


@dataclass
class Task:
    # --- SWE-bench fields -------------------------------------------------------------
    instance_id: str
    repo: str  # local path or git URL
    base_commit: str
    problem_statement: str
    patch: str = ""  # gold patch (never shown to the agent)
    test_patch: str = ""  # hidden tests (never enter the agent's container)
    FAIL_TO_PASS: list[str] = field(default_factory=list)
    PASS_TO_PASS: list[str] = field(default_factory=list)
    version: str = ""
    environment_setup_commit: str = ""
    # --- execution fields -------------------------------------------------------------
    image: str = ""  # prebuilt task image; empty → built from repo + setup
    setup: list[str] = field(default_factory=list)  # commands run at image build (root, network allowed only at build)
    test_cmd: str = "python3 -m pytest"  # junit flags and test ids are appended by the grader
    test_files: list[str] = field(default_factory=list)  # paths the test_patch touches (derived if empty)
    workdir: str = "/testbed"
    exec_timeout_s: float = 60.0
    test_timeout_s: float = 300.0
    # --- metadata ---------------------------------------------------------------------
    suite: str = ""
    difficulty: str = ""  # easy | medium | hard
    extra: dict[str, Any] = field(default_factory=dict)

    _REQUIRED = ("instance_id", "repo", "base_commit", "problem_statement")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "") -> "Task":
        where = f" (from {source})" if source else ""
        if not isinstance(data, Mapping):
            raise TaskError(f"task{where}: expected an object, got {type(data).__name__}")
        iid = str(data.get("instance_id") or "<missing instance_id>")
        for name in cls._REQUIRED:
            value = data.get(name)
            if not isinstance(value, str) or not value.strip():
                raise TaskError(f"task {iid!r}{where}: field {name} is missing or empty")
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        extra = dict(data.get("extra") or {})
        for key, value in data.items():
            if key in known:
                kwargs[key] = value
            else:
                # SWE-bench rows carry fields we don't use (created_at, hints_text…): keep them.
                extra[key] = value
        kwargs["extra"] = extra
        for name in ("FAIL_TO_PASS", "PASS_TO_PASS"):
            kwargs[name] = _as_test_list(data.get(name, []), iid, name)
        for name in ("patch", "test_patch", "version", "environment_setup_commit", "image", "test_cmd"):
            if name in kwargs and kwargs[name] is None:
                kwargs[name] = ""
            if name in kwargs and not isinstance(kwargs[name], str):
                raise TaskError(f"task {iid!r}{where}: field {name} must be a string")
        for name in ("setup", "test_files"):
            if name in kwargs and not (
                isinstance(kwargs[name], list) and all(isinstance(s, str) for s in kwargs[name])
            ):
                raise TaskError(f"task {iid!r}{where}: field {name} must be a list of strings")
        for name in ("exec_timeout_s", "test_timeout_s"):
            if name in kwargs:
                try:
                    kwargs[name] = float(kwargs[name])
                except (TypeError, ValueError):
                    raise TaskError(f"task {iid!r}{where}: field {name} must be a number") from None
                if kwargs[name] <= 0:
                    raise TaskError(f"task {iid!r}{where}: field {name} must be positive")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public_view(self) -> dict[str, Any]:
        """What may be shown to an agent or printed in logs: no gold patch, no hidden tests."""
        return {
            "instance_id": self.instance_id,
            "repo": self.repo,
            "base_commit": self.base_commit,
            "problem_statement": self.problem_statement,
            "suite": self.suite,
            "difficulty": self.difficulty,
        }
