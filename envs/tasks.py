"""Task: the SWE-bench fields plus what execution needs.

Loaders (JSONL in SWE-bench's format, HF datasets, builtin suites) live below the Task
definition. Every validation error names the task and the field.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping


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
    env_activate: str = ""  # shell run before the tests (e.g. conda activation); empty: none
    exec_timeout_s: float = 60.0
    test_timeout_s: float = 300.0
    # --- metadata ---------------------------------------------------------------------
    suite: str = ""
    difficulty: str = ""  # easy | medium | hard | floor (a generated variant, see envs/suites/floor.py)
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
        for name in ("patch", "test_patch", "version", "environment_setup_commit", "image", "test_cmd", "env_activate"):
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


# ======================================================================================
# Loaders
# ======================================================================================


def _task_from_row(row: Any, source: str, dataset: str | None = None) -> Task:
    """Task.from_dict, with every error message carrying where the row came from.

    A SWE-bench-family row (repo "owner/name", no `setup`; or any row when `dataset` names a
    profile) first goes through `envs.swebench.datasets.map_row`: its image (explicit field or
    the dataset's official naming), /testbed, the environment activation and the runner."""
    if dataset is not None or _is_family_row(row):
        from envs.swebench import datasets

        profile = None
        if dataset is not None:
            profile = datasets.profile_named(dataset)
            if profile is None:
                raise TaskError(f"{source}: unknown dataset profile {dataset!r}; known: {', '.join(datasets.PROFILES)}")
        try:
            row = datasets.map_row(row, profile, source=source)
        except datasets.DatasetRowError as exc:
            raise TaskError(str(exc)) from None
    try:
        return Task.from_dict(row, source=source)
    except TaskError as exc:
        if source in str(exc):
            raise
        raise TaskError(f"{source}: {exc}") from None


def _is_family_row(row: Any) -> bool:
    from envs.swebench.datasets import is_family_row

    return is_family_row(row)


def load_jsonl(path: str | os.PathLike[str], dataset: str | None = None) -> list[Task]:
    """SWE-bench-format JSONL, one task per line; errors name file, line, task and field.
    `dataset`: a profile of `envs.swebench.datasets` for every row (else detected per row)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskError(f"cannot read task file {path}: {exc.strerror or exc}") from exc
    tasks: list[Task] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
        tasks.append(_task_from_row(row, f"{path}:{number}", dataset))
    _check_unique(tasks, str(path))
    return tasks


def load_json(path: str | os.PathLike[str], dataset: str | None = None) -> list[Task]:
    """A JSON file holding a list of task objects (or {"tasks": [...]})."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskError(f"cannot read task file {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise TaskError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if isinstance(data, Mapping) and "tasks" in data:
        data = data["tasks"]
    if not isinstance(data, list):
        raise TaskError(f"{path}: expected a list of tasks, got {type(data).__name__}")
    tasks = [_task_from_row(row, f"{path}[{i}]", dataset) for i, row in enumerate(data)]
    _check_unique(tasks, str(path))
    return tasks


def load_hf_dataset(name_or_path: str, split: str = "test", dataset: str | None = None) -> list[Task]:
    """A Hugging Face dataset in SWE-bench's schema (needs the optional `datasets` package).
    The profile (`dataset`) defaults to the one its name implies (SWE-bench, SWE-Gym, …)."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise TaskError(
            f"loading {name_or_path!r} needs the 'datasets' package: pip install 'agent-rl[datasets]'"
        ) from None
    try:
        rows = datasets.load_dataset(name_or_path, split=split)
    except Exception as exc:  # datasets raises many types; all mean "could not load"
        raise TaskError(f"cannot load dataset {name_or_path!r} split {split!r}: {exc}") from exc
    if dataset is None:
        from envs.swebench.datasets import profile_for_hf

        known = profile_for_hf(name_or_path)
        dataset = known.name if known is not None else None
    tasks = [_task_from_row(dict(row), f"{name_or_path}[{split}][{i}]", dataset) for i, row in enumerate(rows)]
    _check_unique(tasks, name_or_path)
    return tasks


def _check_unique(tasks: Iterable[Task], source: str) -> None:
    seen: set[str] = set()
    for task in tasks:
        if task.instance_id in seen:
            raise TaskError(f"{source}: duplicate instance_id {task.instance_id!r}")
        seen.add(task.instance_id)


def load_tasks(spec: "str | os.PathLike[str] | Iterable[Task | Mapping[str, Any]]") -> list[Task]:
    """One entry point for every task source.

    `builtin`, `builtin:easy`, `builtin:<suite>`, `builtin:<suite>:<difficulty>`, the splits
    `builtin:train` / `builtin:heldout` (combinable with a difficulty), the floor tier
    `builtin:floor[:train|heldout|<suite>]`, a `.jsonl` / `.json` file, `hf:<name>[:<split>]`,
    `floor:<any of these>` (their floor variants, e.g. of synthesized tasks), or an iterable
    of Tasks/dicts. SWE-bench-family rows (SWE-bench, Verified, Lite, SWE-Gym, SWE-smith,
    R2E-Gym, SWE-rebench) are mapped by `envs.swebench.datasets`; `<profile>:<file or hf:name>`
    (e.g. `swe-gym:rows.jsonl`) names the profile instead of detecting it.
    """
    if not isinstance(spec, (str, os.PathLike)):
        tasks = [t if isinstance(t, Task) else Task.from_dict(t, source="task list") for t in spec]
        _check_unique(tasks, "task list")
        return tasks
    text = os.fspath(spec)
    if text.startswith("floor:"):
        return _load_floor(text[len("floor:"):])
    if text == "builtin" or text.startswith("builtin:"):
        return _load_builtin(text)
    return _load_source(text, None)


def _load_source(text: str, dataset: str | None) -> list[Task]:
    """hf:, .jsonl, .json, or `<profile>:` in front of one of them."""
    head, sep, rest = text.partition(":")
    if sep and dataset is None and not text.startswith("hf:"):
        from envs.swebench.datasets import profile_named

        profile = profile_named(head)
        if profile is not None:
            return _load_source(rest, profile.name)
    if text.startswith("hf:"):
        name, _, split = text[3:].partition(":")
        return load_hf_dataset(name, split or "test", dataset)
    path = Path(text)
    if path.suffix == ".jsonl":
        return load_jsonl(path, dataset)
    if path.suffix == ".json":
        return load_json(path, dataset)
    raise TaskError(
        f"unknown task spec {text!r}: expected builtin[:suite|split][:difficulty], builtin:<difficulty>, "
        "hf:<dataset>[:split], floor:<spec>, <profile>:<file or hf:name> (profiles: swe-bench, swe-gym, "
        "swe-smith, swe-rebench, r2e-gym), or a .jsonl/.json file"
    )


def _load_builtin(spec: str) -> list[Task]:
    # The grammar (suites, splits, tiers) lives with the suites; see envs.suites.parse_builtin_spec.
    try:
        from envs.suites import load_builtin
    except ImportError as exc:
        raise TaskError(f"builtin suites are unavailable: {exc}") from exc
    return load_builtin(spec)


def _load_floor(inner: str) -> list[Task]:
    """`floor:SPEC`: the floor variant of every task SPEC names (e.g. a synthesized tasks.jsonl)."""
    from envs.suites.floor import floor_variant

    if not inner:
        raise TaskError("task spec 'floor:': name the tasks after the colon, e.g. floor:tasks.jsonl")
    return [floor_variant(task) for task in load_tasks(inner)]


class TaskStore:
    """Tasks by id, in load order."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self._tasks: dict[str, Task] = {}
        for task in tasks:
            if task.instance_id in self._tasks:
                raise TaskError(f"duplicate instance_id {task.instance_id!r}")
            self._tasks[task.instance_id] = task

    @classmethod
    def from_spec(cls, spec: Any) -> "TaskStore":
        return spec if isinstance(spec, TaskStore) else cls(load_tasks(spec))

    def get(self, instance_id: str) -> Task:
        try:
            return self._tasks[instance_id]
        except KeyError:
            close = [i for i in self._tasks if instance_id in i][:5]
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise TaskError(f"no task {instance_id!r} among {len(self._tasks)} tasks{hint}") from None

    def ids(self) -> list[str]:
        return list(self._tasks)

    def __getitem__(self, instance_id: str) -> Task:
        return self.get(instance_id)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._tasks

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)


# --------------------------------------------------------------------------------------
# Repositories: local path or git URL
# --------------------------------------------------------------------------------------

_URL = re.compile(r"^(?:https?|git|ssh|file)://|^[\w.-]+@[\w.-]+:")


def is_git_url(repo: str) -> bool:
    return bool(_URL.match(repo))


def cache_dir() -> Path:
    root = os.environ.get("AGENT_RL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "agent-rl")
    return Path(root)


def resolve_repo(task: Task) -> Path:
    """A local checkout holding `task.base_commit`; git URLs are cloned once into the cache."""
    if not is_git_url(task.repo):
        path = Path(task.repo).expanduser()
        if not (path / ".git").exists() and not (path / "HEAD").exists():
            raise TaskError(f"task {task.instance_id!r}: field repo {task.repo!r} is not a git repository")
        return path
    import fcntl

    import git  # gitpython; imported here so `import envs.tasks` stays light

    key = hashlib.sha256(task.repo.encode()).hexdigest()[:16]
    target = cache_dir() / "repos" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    # One clone per URL even with many processes: the lock file serializes them.
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not target.exists():
                tmp = target.with_name(f"{key}.tmp{os.getpid()}")
                git.Repo.clone_from(task.repo, tmp, no_checkout=True)
                tmp.rename(target)
            repo = git.Repo(target)
            try:
                repo.commit(task.base_commit)
            except (ValueError, git.BadName):
                repo.remote().fetch()
                repo.commit(task.base_commit)
        except (git.GitCommandError, ValueError, git.BadName) as exc:
            raise TaskError(
                f"task {task.instance_id!r}: cannot get commit {task.base_commit} of {task.repo}: {exc}"
            ) from exc
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target
