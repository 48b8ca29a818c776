"""How to install and test a Python repository, found offline from its files.

Containers have no network, so "install" cannot mean `pip install .` with dependencies.
What a pure-Python repository needs is to be importable: a flat layout is importable from
the repository root already (pytest runs there with `python3 -m pytest`); a `src/` layout
gets a `.pth` file in the image's site-packages, written at image build time (trusted, as
root; the agent cannot add one — the grader drops `.pth` files from patches). Declared
dependencies must already be present in the base image; `missing_dependencies_cmd` checks
that inside a container, and anything missing is reported as needing the network.

Both commands can be overridden (`--install-cmd`, `--test-cmd`).
"""
from __future__ import annotations

import ast
import configparser
import fnmatch
import os
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from envs.pytest_protocol import NotPytestError, python_of

DEFAULT_TEST_CMD = "python3 -m pytest"
TEST_FILE_GLOBS = ("test_*.py", "*_test.py")
_SKIP_DIRS = {".git", ".tox", ".venv", "venv", "build", "dist", "__pycache__", "node_modules", ".eggs"}


class DetectError(ValueError):
    """The repository cannot be set up offline; the message says why."""


@dataclass
class ProjectSetup:
    install_cmds: list[str]  # run as root at image build (Task.setup)
    test_cmd: str
    dependencies: list[str]  # distribution names the project declares
    test_files: list[str]
    source_files: list[str]  # non-test .py files: where bugs may be planted
    notes: list[str] = field(default_factory=list)  # how each choice was made


def _walk_py(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return found


def is_test_path(path: str) -> bool:
    parts = path.split("/")
    name = parts[-1]
    return (
        any(fnmatch.fnmatch(name, g) for g in TEST_FILE_GLOBS)
        or name == "conftest.py"
        or any(p in ("tests", "test", "testing") for p in parts[:-1])
    )


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _requirement_name(spec: str) -> str | None:
    spec = spec.split(";", 1)[0].strip()
    if not spec or spec.startswith(("#", "-", "git+", "http:", "https:", "file:", ".")):
        return None
    match = _REQ_NAME.match(spec)
    return match.group(1) if match else None


def _deps_from_pyproject(path: Path, notes: list[str]) -> list[str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DetectError(f"broken install: {path.name} is not valid TOML: {exc}") from exc
    project = data.get("project", {})
    deps = project.get("dependencies", []) if isinstance(project, dict) else []
    if not isinstance(deps, list):
        raise DetectError(f"broken install: {path.name} [project].dependencies is not a list")
    poetry = data.get("tool", {}).get("poetry", {}).get("dependencies", {})
    names = [n for n in (_requirement_name(str(d)) for d in deps) if n]
    names += [n for n in poetry if n.lower() != "python"] if isinstance(poetry, dict) else []
    notes.append(f"pyproject.toml declares {len(names)} dependencies")
    return names


def _deps_from_setup_cfg(path: Path, notes: list[str]) -> list[str]:
    parser = configparser.ConfigParser()
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
    except configparser.Error as exc:
        raise DetectError(f"broken install: setup.cfg does not parse: {exc}") from exc
    raw = parser.get("options", "install_requires", fallback="")
    names = [n for n in (_requirement_name(line) for line in raw.splitlines()) if n]
    if names:
        notes.append(f"setup.cfg declares {len(names)} dependencies")
    return names


def _deps_from_setup_py(path: Path, notes: list[str]) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except SyntaxError as exc:
        raise DetectError(f"broken install: setup.py has a syntax error: {exc}") from exc
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                notes.append("setup.py computes install_requires; not checked")
                continue
            names += [n for n in (_requirement_name(str(v)) for v in value) if n]
    if names:
        notes.append(f"setup.py declares {len(names)} dependencies")
    return names


def _deps_from_requirements(root: Path, notes: list[str]) -> list[str]:
    names: list[str] = []
    for path in sorted(root.glob("requirements*.txt")):
        if any(w in path.name for w in ("dev", "test", "doc", "lint")):
            continue  # tooling, not what the code imports
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        found = [n for n in (_requirement_name(line) for line in lines) if n]
        if found:
            notes.append(f"{path.name} lists {len(found)} packages")
        names += found
    return names


def detect_project(root: str | os.PathLike[str], *, install_cmd: str | None = None,
                   test_cmd: str | None = None) -> ProjectSetup:
    """Inspect a checked-out repository; raise DetectError naming why it cannot be used."""
    root = Path(root)
    notes: list[str] = []
    py_files = _walk_py(root)
    test_files = [p for p in py_files if is_test_path(p) and os.path.basename(p) != "conftest.py"
                  and any(fnmatch.fnmatch(os.path.basename(p), g) for g in TEST_FILE_GLOBS)]
    source_files = [p for p in py_files if not is_test_path(p) and os.path.basename(p) not in ("setup.py", "conftest.py")]
    if not test_files:
        raise DetectError("no tests: the repository has no test_*.py or *_test.py files for pytest to run")
    if not source_files:
        raise DetectError("no source: the repository has no non-test Python files to plant bugs in")

    deps: list[str] = []
    if (root / "pyproject.toml").is_file():
        deps += _deps_from_pyproject(root / "pyproject.toml", notes)
    if (root / "setup.cfg").is_file():
        deps += _deps_from_setup_cfg(root / "setup.cfg", notes)
    if (root / "setup.py").is_file():
        deps += _deps_from_setup_py(root / "setup.py", notes)
    deps += _deps_from_requirements(root, notes)
    deps = sorted(set(deps), key=str.lower)

    if install_cmd is not None:
        install = [install_cmd] if install_cmd.strip() else []
        notes.append("install command given by --install-cmd")
    elif (root / "src").is_dir() and any(p.startswith("src/") for p in source_files):
        install = [src_layout_install_cmd("/testbed/src")]
        source_files = [p for p in source_files if p.startswith("src/")]
        notes.append("src/ layout: /testbed/src put on sys.path with a .pth file at image build")
    else:
        install = []
        notes.append("flat layout: importable from the repository root, no install step")

    if test_cmd is not None:
        try:
            python_of(test_cmd)  # the form every test run accepts (envs.pytest_protocol)
        except NotPytestError:
            raise DetectError(f"--test-cmd {test_cmd!r} must be a pytest command such as 'python3 -m pytest'") from None
        notes.append("test command given by --test-cmd")
    return ProjectSetup(install, test_cmd or DEFAULT_TEST_CMD, deps, test_files, source_files, notes)


def src_layout_install_cmd(path: str) -> str:
    code = (
        "import site, pathlib; "
        f"pathlib.Path(site.getsitepackages()[0], 'agent-rl-synth-src.pth').write_text({path!r} + '\\n')"
    )
    return f"python3 -c {shlex.quote(code)}"


def missing_dependencies_cmd(dependencies: list[str]) -> str:
    """A shell command printing one line per dependency that is not installed in the image."""
    code = (
        "import importlib.metadata as m, sys\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        m.distribution(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        print(name)\n"
    )
    return " ".join(shlex.quote(a) for a in ["python3", "-c", code, *dependencies])
