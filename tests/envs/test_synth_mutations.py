"""Mutation strategies, seeded selection and install/test detection (no containers)."""
from __future__ import annotations

import ast
import textwrap

import pytest

from envs.synth.detect import DetectError, detect_project
from envs.synth.mutations import STRATEGIES, enumerate_mutations, select_candidates

SOURCE = textwrap.dedent('''\
    """A module docstring is never mutated."""


    def clamp(x, lo, hi):
        """Docstring."""
        if lo > hi:
            raise ValueError("empty range")  # a guard
        if x < lo:
            return lo
        elif x > hi:
            return hi
        else:
            return x


    class Acc:
        def add(self, items):
            for i in range(len(items)):
                self.total += items[i]
            self.log.append(len(items))
            return self.total - 0.5 * 2

        def ok(self):
            return True
''')


def _applied(strategy: str) -> list[tuple[str, str]]:
    out = []
    for m in enumerate_mutations("pkg/mod.py", SOURCE, [strategy]):
        assert m.strategy == strategy
        mutated = m.apply(SOURCE)
        ast.parse(mutated)
        out.append((SOURCE[m.start:m.end], m.replacement))
    return out


def test_each_strategy_makes_its_kind_of_edit() -> None:
    assert ("lo > hi", "lo < hi") in _applied("flip_comparison")
    assert ("x < lo", "x <= lo") in _applied("off_by_one")
    assert ("self.total - 0.5 * 2", "0.5 * 2 - self.total") in _applied("swap_arguments")
    dropped = [old for old, new in _applied("drop_statement")]
    assert any("self.log.append" in old for old in dropped) and any("+=" in old for old in dropped)
    assert any(old.lstrip().startswith("elif x > hi") for old, new in _applied("drop_branch"))
    assert ("True", "False") in _applied("change_return")
    assert ("x < lo", "not x < lo") in _applied("invert_condition")
    guards = [old for old, new in _applied("remove_guard")]
    assert any("raise ValueError" in g for g in guards)
    assert ("range(len(items))", "range(len(items) - 1)") in _applied("break_loop_bound")


def test_docstrings_and_module_level_code_are_left_alone() -> None:
    for m in enumerate_mutations("pkg/mod.py", SOURCE):
        assert "Docstring" not in SOURCE[m.start:m.end]
        assert m.line > 3
    assert enumerate_mutations("x.py", "def broken(:\n") == []


def test_selection_is_deterministic_under_a_seed_and_interleaves_strategies() -> None:
    muts = enumerate_mutations("pkg/mod.py", SOURCE)
    a = [m.id for m in select_candidates(muts, seed=7)]
    b = [m.id for m in select_candidates(list(reversed(muts)), seed=7)]
    assert a == b and len(a) == len(muts)
    assert a != [m.id for m in select_candidates(muts, seed=8)]
    first = select_candidates(muts, seed=7, limit=len(STRATEGIES))
    assert len({m.strategy for m in first}) == len(STRATEGIES)  # one of each before any repeats


def test_unknown_strategy_is_named() -> None:
    with pytest.raises(ValueError, match="unknown mutation strategies \\['flip'\\]"):
        enumerate_mutations("x.py", SOURCE, ["flip"])


def _tree(tmp_path, files: dict[str, str]):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_detect_flat_src_and_dependencies(tmp_path) -> None:
    flat = detect_project(_tree(tmp_path / "a", {"pkg/m.py": "x = 1\n", "tests/test_m.py": "def test(): pass\n",
                                                   "pyproject.toml": "[project]\nname='a'\ndependencies=['attrs>=1']\n"}))
    assert flat.install_cmds == [] and flat.test_cmd == "python3 -m pytest"
    assert flat.dependencies == ["attrs"] and flat.source_files == ["pkg/m.py"]
    src = detect_project(_tree(tmp_path / "b", {"src/pkg/m.py": "x = 1\n", "tests/test_m.py": "def test(): pass\n",
                                                  "requirements.txt": "# c\nsix==1.0\n-e .\n"}))
    assert "agent-rl-synth-src.pth" in src.install_cmds[0] and src.dependencies == ["six"]
    override = detect_project(tmp_path / "a", install_cmd="true", test_cmd="python3 -m pytest")
    assert override.install_cmds == ["true"]


def test_detect_names_what_is_wrong(tmp_path) -> None:
    with pytest.raises(DetectError, match="no tests"):
        detect_project(_tree(tmp_path / "a", {"pkg/m.py": "x = 1\n"}))
    with pytest.raises(DetectError, match="broken install: pyproject.toml is not valid TOML"):
        detect_project(_tree(tmp_path / "b", {"pkg/m.py": "x = 1\n", "test_m.py": "", "pyproject.toml": "[project\n"}))
    with pytest.raises(DetectError, match="must be a pytest command"):
        detect_project(_tree(tmp_path / "c", {"pkg/m.py": "x = 1\n", "test_m.py": ""}), test_cmd="make test")
