"""Per repository: which log parser reads its test output and how its tests are run.

SWE-bench runs each repository's tests with that repository's own runner and reads the output
with a parser chosen by repository. The table below carries those facts as data: a *family*
(pytest, Django's runner, SymPy's runner, plain unittest) fixes the command shape and the way a
changed test file becomes a command-line target; a repository picks a family and, for the pytest
family, the parser variant the official harness uses for it. Anything not in the table is
pytest. A task may name its parser explicitly (`log_parser`, short names or the official
`parse_log_*` names); an unknown name is an error that lists the known ones.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from envs.swebench.log_parsers import PARSERS, Parser


@dataclass(frozen=True)
class Family:
    """A test runner: its command (targets appended) and how a test file becomes a target."""

    name: str
    command: tuple[str, ...]
    target: Callable[[str], str]


def _path(path: str) -> str:
    return path


def _django_label(path: str) -> str:
    """Django's runtests.py takes dotted labels relative to tests/:
    "tests/admin_views/tests.py" → "admin_views.tests"."""
    label = path[len("tests/"):] if path.startswith("tests/") else path
    label = label[: -len(".py")] if label.endswith(".py") else label
    return label.replace("/", ".")


def _unittest_module(path: str) -> str:
    """`python -m unittest` takes module names: "pkg/test_x.py" → "pkg.test_x"."""
    return (path[: -len(".py")] if path.endswith(".py") else path).replace("/", ".")


FAMILIES: dict[str, Family] = {
    "pytest": Family("pytest", ("pytest", "--no-header", "-rA", "--tb=no", "-p", "no:cacheprovider"), _path),
    "django": Family(
        "django",
        ("./tests/runtests.py", "--verbosity", "2", "--settings=test_sqlite", "--parallel", "1"),
        _django_label,
    ),
    "sympy": Family("sympy", ("bin/test", "-C", "--verbose"), _path),
    "unittest": Family("unittest", ("python", "-m", "unittest", "-v"), _unittest_module),
}

# Which family each parser belongs to (its output is what that family's runner prints).
PARSER_FAMILY: dict[str, str] = {
    "pytest": "pytest",
    "pytest_options": "pytest",
    "pytest_v2": "pytest",
    "matplotlib": "pytest",
    "seaborn": "pytest",
    "django": "django",
    "sympy": "sympy",
    "unittest": "unittest",
}

# The official harness's parser per repository (swebench.harness.log_parsers), by short name.
REPO_PARSERS: dict[str, str] = {
    "astropy/astropy": "pytest_v2",
    "django/django": "django",
    "marshmallow-code/marshmallow": "pytest",
    "matplotlib/matplotlib": "matplotlib",
    "mwaskom/seaborn": "seaborn",
    "pallets/flask": "pytest",
    "psf/requests": "pytest_options",
    "pvlib/pvlib-python": "pytest",
    "pydata/xarray": "pytest",
    "pydicom/pydicom": "pytest_options",
    "pylint-dev/astroid": "pytest",
    "pylint-dev/pylint": "pytest_options",
    "pytest-dev/pytest": "pytest",
    "pyvista/pyvista": "pytest",
    "scikit-learn/scikit-learn": "pytest_v2",
    "sphinx-doc/sphinx": "pytest_v2",
    "sqlfluff/sqlfluff": "pytest",
    "sympy/sympy": "sympy",
}
DEFAULT_PARSER = "pytest"

# The official registry's names (SWE-bench 5 datasets carry them in `log_parser`) → ours.
OFFICIAL_NAMES: dict[str, str] = {
    "parse_log_pytest": "pytest",
    "parse_log_pytest_options": "pytest_options",
    "parse_log_pytest_v2": "pytest_v2",
    "parse_log_matplotlib": "matplotlib",
    "parse_log_seaborn": "seaborn",
    "parse_log_django": "django",
    "parse_log_sympy": "sympy",
    # per-repository aliases the official registry also lists
    "parse_log_astroid": "pytest",
    "parse_log_flask": "pytest",
    "parse_log_marshmallow": "pytest",
    "parse_log_pvlib": "pytest",
    "parse_log_pyvista": "pytest",
    "parse_log_sqlfluff": "pytest",
    "parse_log_xarray": "pytest",
    "parse_log_pydicom": "pytest_options",
    "parse_log_requests": "pytest_options",
    "parse_log_pylint": "pytest_options",
    "parse_log_astropy": "pytest_v2",
    "parse_log_scikit": "pytest_v2",
    "parse_log_sphinx": "pytest_v2",
}


class UnknownParserError(ValueError):
    """A `log_parser` name that is neither ours nor an official Python one."""


@dataclass(frozen=True)
class LogSpec:
    """How one repository's tests are run and read."""

    repo: str  # "owner/name", or the text given when it is not a GitHub repository
    parser_name: str  # a key of log_parsers.PARSERS
    family: Family

    @property
    def parser(self) -> Parser:
        return PARSERS[self.parser_name]

    def parse(self, log: str) -> dict[str, str]:
        """{test name: status} from the test output."""
        return self.parser(log)

    def targets(self, test_files: Sequence[str]) -> list[str]:
        """The runner's command-line targets for the changed test files (deduplicated, in order)."""
        return list(dict.fromkeys(self.family.target(path) for path in test_files))

    def test_command(self, test_files: Sequence[str]) -> str:
        """One shell command running the tests of `test_files` with this repository's runner."""
        return shlex.join([*self.family.command, *self.targets(test_files)])


def parser_name(name: str) -> str:
    """Our short parser name for `name` (short or official); UnknownParserError otherwise."""
    key = name.strip()
    key = OFFICIAL_NAMES.get(key, key)
    if key not in PARSERS:
        known = ", ".join(sorted(PARSERS))
        official = ", ".join(sorted(OFFICIAL_NAMES))
        raise UnknownParserError(f"unknown log_parser {name!r}; known: {known} (or the official names {official})")
    return key


# "https://github.com/django/django(.git)", "git@github.com:django/django"
_GITHUB_URL = re.compile(r"github\.com[/:](?P<owner>[\w.-]+)/(?P<name>[\w.-]+?)(?:\.git)?/?$")
# "django/django"
_OWNER_NAME = re.compile(r"(?P<owner>\w[\w.-]*)/(?P<name>[\w.-]+)")
# SWE-bench instance ids: "django__django-11099" → "django/django"
_INSTANCE_ID = re.compile(r"(?P<owner>[\w.-]+?)__(?P<name>[\w.-]+)-\d+")


def repo_key(repo: str, instance_id: str = "") -> str:
    """"owner/name" for a repository given as a name or a GitHub URL; for anything else (a
    local path, another host) recovered from a SWE-bench instance id; else `repo` unchanged."""
    text = repo.strip()
    match = _GITHUB_URL.search(text) or _OWNER_NAME.fullmatch(text)
    if not match:
        match = _INSTANCE_ID.fullmatch(instance_id.strip())
    return f"{match['owner']}/{match['name']}" if match else repo


def select(repo: str, log_parser: str | None = None, *, instance_id: str = "") -> LogSpec:
    """The LogSpec for `repo`: the named parser when given, else the repository's, else pytest."""
    key = repo_key(repo, instance_id)
    name = parser_name(log_parser) if log_parser else REPO_PARSERS.get(key, DEFAULT_PARSER)
    return LogSpec(repo=key, parser_name=name, family=FAMILIES[PARSER_FAMILY[name]])


def for_task(task: Any) -> LogSpec:
    """The LogSpec of an `envs.tasks.Task` (or a SWE-bench row as a mapping). A `log_parser`
    field (top level of a row, or in `Task.extra`) overrides the repository's default."""
    if isinstance(task, Mapping):
        fields: Mapping[str, Any] = task
        extra: Mapping[str, Any] = task.get("extra") or {}
    else:
        fields = {"repo": task.repo, "instance_id": task.instance_id}
        extra = getattr(task, "extra", None) or {}
    override = fields.get("log_parser") or extra.get("log_parser")
    return select(str(fields.get("repo", "")), override, instance_id=str(fields.get("instance_id", "")))
