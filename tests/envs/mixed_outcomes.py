"""A small healthy repository whose suite has every pytest outcome but failure: passes, a
`pytest.mark.skip`, a `unittest.skipUnless` on an environment variable, an xfail and a
(non-strict) xpass. `BROKEN_TESTS` adds the failures and errors, for parser tests only.

Used by the protocol, synth and refresh tests: none of the skipped or xfail-marked tests may
block synthesis or refresh, or land in FAIL_TO_PASS / PASS_TO_PASS.
"""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

from envs.pytest_protocol import Outcome

SOURCE = textwrap.dedent('''\
    def slug(text):
        return "-".join(text.lower().split())


    def mean(values):
        if not values:
            raise ValueError("mean of nothing")
        return sum(values) / len(values)


    def chunks(items, size):
        out = []
        for start in range(0, len(items), size):
            out.append(items[start:start + size])
        return out
''')

TESTS = textwrap.dedent('''\
    import os
    import unittest

    import pytest

    from mixkit.ops import chunks, mean, slug


    def test_slug():
        assert slug("Hello  World") == "hello-world"


    def test_mean():
        assert mean([2, 4]) == 3


    def test_mean_of_nothing():
        with pytest.raises(ValueError):
            mean([])


    def test_chunks():
        assert chunks([1, 2, 3, 4], 2) == [[1, 2], [3, 4]]


    def test_chunks_uneven():
        assert chunks([1, 2, 3], 2) == [[1, 2], [3]]


    @pytest.mark.skip(reason="slow on CI")
    def test_skipped_by_mark():
        assert slug("x") == "x"


    @pytest.mark.xfail(reason="float rounding")
    def test_xfail():
        assert mean([0.1, 0.2]) == 0.15


    @pytest.mark.xfail(reason="may work on some platforms")
    def test_xpass():
        assert slug("A b") == "a-b"


    class TestNetwork(unittest.TestCase):
        @unittest.skipUnless(os.environ.get("MIXKIT_ONLINE"), "set MIXKIT_ONLINE to run network tests")
        def test_online(self):
            self.assertEqual(chunks([1], 1), [[1]])

        def test_offline(self):
            self.assertEqual(chunks([], 3), [])
''')

BROKEN_TESTS = textwrap.dedent('''\
    import pytest

    from mixkit.ops import mean


    def test_fails():
        assert mean([1, 2]) == 2, "means are off"


    @pytest.fixture
    def broken():
        raise RuntimeError("fixture broke")


    def test_setup_error(broken):
        pass


    @pytest.mark.xfail(reason="strict", strict=True)
    def test_strict_xpass():
        assert mean([1]) == 1
''')

FILES = {
    "mixkit/__init__.py": "",
    "mixkit/ops.py": SOURCE,
    "tests/test_ops.py": TESTS,
    "pyproject.toml": "[project]\nname = 'mixkit'\nversion = '0.1'\n",
}

T = "tests/test_ops.py::"
EXPECTED = {
    f"{T}test_slug": Outcome.PASSED,
    f"{T}test_mean": Outcome.PASSED,
    f"{T}test_mean_of_nothing": Outcome.PASSED,
    f"{T}test_chunks": Outcome.PASSED,
    f"{T}test_chunks_uneven": Outcome.PASSED,
    f"{T}test_skipped_by_mark": Outcome.SKIPPED,
    f"{T}test_xfail": Outcome.XFAILED,
    f"{T}test_xpass": Outcome.XPASSED,
    f"{T}TestNetwork::test_online": Outcome.SKIPPED,
    f"{T}TestNetwork::test_offline": Outcome.PASSED,
}
EXPECTED_BROKEN = {
    "tests/test_broken.py::test_fails": Outcome.FAILED,
    "tests/test_broken.py::test_setup_error": Outcome.ERROR,
    "tests/test_broken.py::test_strict_xpass": Outcome.FAILED,
}
NEUTRAL = sorted(t for t, o in EXPECTED.items() if o.is_neutral)

_GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
            "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
            "GIT_CONFIG_GLOBAL": os.devnull, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def make_repo(path: Path, extra: dict[str, str] | None = None) -> tuple[Path, str]:
    """The repository (FILES plus `extra`) committed with real git at `path`; returns (path, commit)."""
    for rel, text in {**FILES, **(extra or {})}.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "mixkit"]):
        subprocess.run(["git", *cmd], cwd=path, env=_GIT_ENV, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, env=_GIT_ENV, check=True, capture_output=True,
                            text=True).stdout.strip()
    return path, commit
