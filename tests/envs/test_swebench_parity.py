"""envs.swebench against the official SWE-bench harness (`swebench`, a dev dependency).

A corpus of real logs is produced once per module by running the real runners on real code
in temporary directories: pytest (-rA; plain, with colours and verbose classic lines, with a
collection error), Django's test runner at verbosity 2 on a tiny app, SymPy's own runner
(`sympy.testing.runtests`, what bin/test drives) on a probe file and on two of SymPy's own test
files, and `python -m unittest -v`. Every one of our parsers must read every log exactly as its
official counterpart does, and our reports must equal the official report functions' output.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envs.swebench import eval_log, log_parsers, report, specs

swebench_grading = pytest.importorskip("swebench.harness.grading")
from swebench.harness.log_parsers import PARSER_REGISTRY  # noqa: E402
from swebench.harness.log_parsers.python import MAP_REPO_TO_PARSER_PY  # noqa: E402
from swebench import types as swebench_types  # noqa: E402

# Our parser name → the official registry's function for it.
OFFICIAL = {name: PARSER_REGISTRY[f"parse_log_{name}"] for name in log_parsers.PARSERS if name != "unittest"}

RUN_TIMEOUT_S = 120


def _run(argv: list[str], cwd: Path, **env: str) -> str:
    """Run a real test runner; its stdout and stderr together, as the harness's log has them."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    full_env.update(env)
    proc = subprocess.run(
        argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    return proc.stdout


# --------------------------------------------------------------------------------------
# The corpus: real runner output
# --------------------------------------------------------------------------------------

PYTEST_TESTS = '''
import pytest

def test_pass():
    assert True

def test_fail():
    assert 1 == 2, "one - is not two"

@pytest.mark.skip(reason="not today")
def test_skip():
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="fixed already")
def test_xpass():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("fixture boom")

def test_error(broken):
    pass

@pytest.mark.parametrize("value", ["a b", "/tmp/data/file.txt", "//net/x", "x*y", "plain"])
def test_param(value):
    assert value != "plain"

class TestGroup:
    def test_method(self):
        print("PASSED text a test printed")
'''

DJANGO_SETTINGS = '''
SECRET_KEY = "parity"
INSTALLED_APPS = ["django.contrib.contenttypes", "probeapp"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
'''

UNITTEST_TESTS = '''
import sys
import unittest

class Basics(unittest.TestCase):
    def test_ok(self):
        self.assertEqual(1, 1)

    def test_fail(self):
        self.assertEqual(1, 2)

    def test_error(self):
        raise RuntimeError("boom")

    @unittest.skip("not today")
    def test_skip(self):
        pass

    @unittest.expectedFailure
    def test_xfail(self):
        self.assertEqual(1, 2)

    @unittest.expectedFailure
    def test_xpass(self):
        pass

    def test_noisy(self):
        sys.stderr.write("some output\\nmore output\\n")

    def test_doc(self):
        """Checks a documented thing."""

    def test_sub(self):
        for i in range(2):
            with self.subTest(i=i):
                self.assertEqual(i, 0)


class WithSetup(unittest.TestCase):
    def setUp(self):
        self.value = 3

    def test_value(self):
        self.assertEqual(self.value, 3)
'''

DJANGO_TESTS = UNITTEST_TESTS.replace("import unittest\n", "import unittest\nfrom django.test import TestCase\n") + '''

class WithDatabase(TestCase):
    def test_db(self):
        from django.contrib.contenttypes.models import ContentType
        self.assertGreaterEqual(ContentType.objects.count(), 0)
'''

SYMPY_PROBE = '''
from sympy import Symbol
from sympy.testing.pytest import XFAIL, skip

def test_ok():
    assert Symbol("x") == Symbol("x")

def test_fail():
    assert 1 == 2

def test_error():
    raise RuntimeError("boom")

@XFAIL
def test_xfail():
    assert 1 == 2

@XFAIL
def test_xpass():
    assert 1 == 1

def test_skip():
    skip("not today")
'''

# SymPy's runner takes paths relative to its root; pointing a SymPyTests at another root runs
# our own file through the same reporter that bin/test uses.
SYMPY_DRIVER = '''
import os, sys
from sympy.testing.runtests import PyTestReporter, SymPyTests
root = os.path.abspath(sys.argv[1])
reporter = PyTestReporter(verbose=True, tb="short", colors=False)
tests = SymPyTests(reporter, kw=None, post_mortem=False, seed=1)
tests._root_dir = root
reporter.root_dir(root)
tests._testfiles.extend(os.path.join(root, f) for f in sys.argv[2:])
sys.exit(int(not tests.test(sort=True)))
'''
SYMPY_OWN_FILES = ("sympy/core/tests/test_truediv.py", "sympy/core/tests/test_compatibility.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """name → real log text; produced once per module (a few seconds in all)."""
    base = tmp_path_factory.mktemp("swebench-parity")
    logs: dict[str, str] = {}
    py = sys.executable

    # pytest, with the harness's command line (specs) and its variants
    (base / "pt" / "pkg").mkdir(parents=True)
    (base / "pt" / "pkg" / "test_mixed.py").write_text(PYTEST_TESTS)
    (base / "pt" / "pkg" / "test_broken_import.py").write_text("import no_such_module_xyz\n\ndef test_never():\n    pass\n")
    pytest_cmd = [py, "-m", *specs.select("pytest-dev/pytest").family.command]
    no_plugins = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    logs["pytest"] = _run([*pytest_cmd, "pkg/test_mixed.py"], base / "pt", **no_plugins)
    logs["pytest-collection-error"] = _run(
        [*pytest_cmd, "--continue-on-collection-errors", "pkg/test_mixed.py", "pkg/test_broken_import.py"],
        base / "pt", **no_plugins,
    )  # fmt: skip
    logs["pytest-interrupted"] = _run([*pytest_cmd, "pkg/test_mixed.py", "pkg/test_broken_import.py"], base / "pt", **no_plugins)
    # astropy / scikit-learn style: verbose, classic progress, colours (what the v2 parser is for)
    logs["pytest-color-verbose"] = _run(
        [py, "-m", "pytest", "-rA", "-vv", "-o", "console_output_style=classic", "--tb=no", "-p", "no:cacheprovider",
         "--color=yes", "pkg/test_mixed.py"],
        base / "pt", **no_plugins,
    )  # fmt: skip

    # Django's runner at verbosity 2 (runtests.py is not in the pip package; `django test`
    # drives the same DiscoverRunner and unittest result printing)
    (base / "dj" / "probeapp").mkdir(parents=True)
    (base / "dj" / "settings_probe.py").write_text(DJANGO_SETTINGS)
    (base / "dj" / "probeapp" / "__init__.py").write_text("")
    (base / "dj" / "probeapp" / "tests.py").write_text(DJANGO_TESTS)
    logs["django"] = _run(
        [py, "-m", "django", "test", "-v", "2", "--settings=settings_probe", "--parallel", "1", "probeapp"],
        base / "dj", PYTHONPATH=str(base / "dj"),
    )  # fmt: skip

    # SymPy's runner: our probe file, then two of SymPy's own test files through the classic
    # runner's test() (bin/test's; `sympy.test` itself may hand over to pytest)
    (base / "sy" / "probe").mkdir(parents=True)
    (base / "sy" / "probe" / "test_probe.py").write_text(SYMPY_PROBE)
    (base / "sy" / "driver.py").write_text(SYMPY_DRIVER)
    logs["sympy-probe"] = _run([py, "driver.py", str(base / "sy"), "probe/test_probe.py"], base / "sy")
    logs["sympy-own"] = _run(
        [py, "-c", "import sys; from sympy.testing.runtests import test; "
         "sys.exit(test(*sys.argv[1:], verbose=True, colors=False, subprocess=False))",
         *SYMPY_OWN_FILES],
        base / "sy",
    )  # fmt: skip

    # plain unittest -v
    (base / "ut").mkdir()
    (base / "ut" / "test_plain.py").write_text(UNITTEST_TESTS)
    logs["unittest"] = _run([py, "-m", "unittest", "-v", "test_plain"], base / "ut")
    return logs


# --------------------------------------------------------------------------------------
# The corpus is what we think it is (so parity below is not parity on empty maps)
# --------------------------------------------------------------------------------------


def test_corpus_holds_every_outcome(corpus: dict[str, str]) -> None:
    pytest_map = log_parsers.parse_pytest(corpus["pytest"])
    assert pytest_map["pkg/test_mixed.py::test_pass"] == "PASSED"
    assert pytest_map["pkg/test_mixed.py::test_fail"] == "FAILED"
    assert pytest_map["pkg/test_mixed.py::test_xfail"] == "XFAIL"
    assert pytest_map["pkg/test_mixed.py::test_error"] == "ERROR"
    assert pytest_map["pkg/test_mixed.py::TestGroup::test_method"] == "PASSED"
    assert "SKIPPED [1] pkg/test_mixed.py" in corpus["pytest"]  # grouped skips: not test ids
    assert "pkg/test_broken_import.py" in log_parsers.parse_pytest(corpus["pytest-collection-error"])

    django_map = log_parsers.parse_django(corpus["django"])
    assert django_map["test_ok (probeapp.tests.Basics.test_ok)"] == "PASSED"
    assert django_map["test_noisy (probeapp.tests.Basics.test_noisy)"] == "PASSED"  # "ok" on a later line
    assert django_map["Checks a documented thing."] == "PASSED"  # docstring names, as SWE-bench lists them
    assert django_map["test_skip (probeapp.tests.Basics.test_skip)"] == "SKIPPED"
    assert django_map["test_fail (probeapp.tests.Basics.test_fail)"] == "FAILED"
    assert django_map["test_error (probeapp.tests.Basics.test_error)"] == "ERROR"
    assert django_map["test_db (probeapp.tests.WithDatabase.test_db)"] == "PASSED"

    sympy_map = log_parsers.parse_sympy(corpus["sympy-probe"])
    assert {k: v for k, v in sympy_map.items() if k.startswith("test_")} == {
        "test_ok": "PASSED", "test_fail": "FAILED", "test_error": "ERROR",
    }  # fmt: skip
    assert sympy_map["probe/test_probe.py::test_fail"] == "FAILED"  # from the traceback header
    # The last test of each file shares its line with the file's "[OK]" tag, and the harness's
    # reading (ours too) does not record it: "test_ibasic ok    [OK]".
    assert "test_ibasic ok" in corpus["sympy-own"] and "[OK]" in corpus["sympy-own"]
    assert log_parsers.parse_sympy(corpus["sympy-own"]) == {"test_truediv": "PASSED", "test_basic": "PASSED"}


# --------------------------------------------------------------------------------------
# Parsers: every parser of ours on every real log == the official one
# --------------------------------------------------------------------------------------

CORPUS_NAMES = (
    "pytest", "pytest-collection-error", "pytest-interrupted", "pytest-color-verbose",
    "django", "sympy-probe", "sympy-own", "unittest",
)  # fmt: skip


@pytest.mark.parametrize("log_name", CORPUS_NAMES)
@pytest.mark.parametrize("parser", sorted(OFFICIAL))
def test_parser_matches_official(corpus: dict[str, str], log_name: str, parser: str) -> None:
    log = corpus[log_name]
    ours = log_parsers.PARSERS[parser](log)
    official = OFFICIAL[parser](log, None)
    assert ours == official


def test_native_pairs_are_not_trivial(corpus: dict[str, str]) -> None:
    """Each parser's own format yields a real map on the logs it is meant for."""
    for parser, log_name, at_least in (
        ("pytest", "pytest", 8), ("pytest_options", "pytest", 8), ("pytest_v2", "pytest-color-verbose", 10),
        ("matplotlib", "pytest", 8), ("seaborn", "pytest", 6), ("django", "django", 10),
        ("sympy", "sympy-probe", 4), ("sympy", "sympy-own", 2), ("django", "unittest", 8),
    ):  # fmt: skip
        assert len(log_parsers.PARSERS[parser](corpus[log_name])) >= at_least, (parser, log_name)


def test_pytest_options_shortens_path_parameters(corpus: dict[str, str]) -> None:
    options = log_parsers.parse_pytest_options(corpus["pytest"])
    assert options["pkg/test_mixed.py::test_param[/file.txt]"] == "PASSED"
    assert options["pkg/test_mixed.py::test_param[//net/x]"] == "PASSED"
    v2 = log_parsers.parse_pytest_v2(corpus["pytest-color-verbose"])
    assert v2["pkg/test_mixed.py::test_param[a b]"] == "PASSED"  # ids with spaces survive in v2


@pytest.mark.parametrize(
    "text",
    [
        # hand-made lines for the official parsers' special cases, on top of the real corpus
        "\x1b[32mPASSED\x1b[0m a.py::t[x]\r\nFAILED a.py::u - boom - more\nSKIPPED [2] a.py:3: why\nXFAIL a.py::v - r\n",
        "a.py::t PASSED\na.py::u XFAILED\nERROR: file or directory not found: nope\nFAILED\n",
        "test_x (m.T) ... Testing against Django installed in '/x' with up to 8 processes\n"
        "System check identified no issues (0 silenced).\nok\n--version is equivalent to version\n"
        "Applying sites.0002_alter_domain_unique...test_no_migrations (m.T) ... ok\n",
        "test_y (m.T) ... Internal Server Error: /admin/x/\nok\nFAIL: test_z (m.T)\nERROR: test_w (m.T)\n",
        "________ sympy/a/tests/test_b.py:test_c ________\n  x.py:12: Warning here \ntest_d E\ntest_e F\n",
        "test_plot[MouseButton.LEFT] \nPASSED t.py::test_plot[MouseButton.LEFT]\nt.py::a PASSED x\n",
    ],
)
@pytest.mark.parametrize("parser", sorted(OFFICIAL))
def test_parser_quirks_match_official(text: str, parser: str) -> None:
    assert log_parsers.PARSERS[parser](text) == OFFICIAL[parser](text, None)


# --------------------------------------------------------------------------------------
# The unittest parser (no official counterpart)
# --------------------------------------------------------------------------------------


def test_unittest_parser_reads_every_result(corpus: dict[str, str]) -> None:
    name = "{0} (test_plain.Basics.{0})".format
    statuses = log_parsers.parse_unittest(corpus["unittest"])
    assert statuses[name("test_ok")] == "PASSED"
    assert statuses[name("test_noisy")] == "PASSED"
    assert statuses["Checks a documented thing."] == "PASSED"
    assert statuses[name("test_fail")] == "FAILED"
    assert statuses[name("test_error")] == "ERROR"
    assert statuses[name("test_skip")] == "SKIPPED"
    assert statuses[name("test_xfail")] == "XFAIL"
    assert statuses[name("test_xpass")] == "FAILED"
    assert statuses[name("test_sub")] == "FAILED"  # a failed subtest fails its test
    assert statuses["test_value (test_plain.WithSetup.test_value)"] == "PASSED"


@pytest.mark.parametrize("log_name", ["unittest", "django"])
def test_unittest_parser_agrees_with_official_django_parser(corpus: dict[str, str], log_name: str) -> None:
    """Where the official (Django) parser records a test, ours says the same; ours records
    more only for results the official one leaves out."""
    ours = log_parsers.parse_unittest(corpus[log_name])
    official = PARSER_REGISTRY["parse_log_django"](corpus[log_name], None)
    header_words = {k for k in official if " " not in k and k.startswith("test_")}  # "FAIL: test_x" quirk
    assert {k: ours[k] for k in official.keys() - header_words} == {k: official[k] for k in official.keys() - header_words}
    extra = {k: ours[k] for k in ours.keys() - official.keys()}
    assert sorted(extra.values()) == ["FAILED", "FAILED", "XFAIL"]  # unexpected success, subtest parent, xfail


# --------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------


def test_repository_table_matches_official() -> None:
    assert set(specs.REPO_PARSERS) == set(MAP_REPO_TO_PARSER_PY)
    for repo, function in MAP_REPO_TO_PARSER_PY.items():
        assert OFFICIAL[specs.REPO_PARSERS[repo]] is function, repo
    python_parsers = {n for n, f in PARSER_REGISTRY.items() if f.__module__.endswith(".python")}
    assert python_parsers == set(specs.OFFICIAL_NAMES)
    for official_name, ours in specs.OFFICIAL_NAMES.items():
        assert PARSER_REGISTRY[official_name] is OFFICIAL[ours], official_name


def test_selection_and_commands() -> None:
    django = specs.select("django/django")
    assert django.parser_name == "django"
    assert django.test_command(["tests/admin_views/tests.py", "tests/admin_views/test_forms.py"]) == (
        "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 admin_views.tests admin_views.test_forms"
    )
    assert specs.select("sympy/sympy").test_command(["sympy/core/tests/test_basic.py"]) == (
        "bin/test -C --verbose sympy/core/tests/test_basic.py"
    )
    assert specs.select("someone/else").test_command(["t/test_a.py", "t/test_a.py"]) == (
        "pytest --no-header -rA --tb=no -p no:cacheprovider t/test_a.py"
    )
    assert specs.select("pytest-dev/pytest").parser_name == "pytest"
    assert specs.select("astropy/astropy").parser_name == "pytest_v2"
    assert specs.select("https://github.com/django/django.git").parser_name == "django"
    assert specs.select("/srv/repos/checkout", instance_id="sympy__sympy-20590").parser_name == "sympy"
    assert specs.select("/srv/repos/checkout").parser_name == "pytest"
    # an explicit parser wins; official names are accepted
    assert specs.select("django/django", "unittest").test_command(["pkg/test_x.py"]) == "python -m unittest -v pkg.test_x"
    assert specs.select("x/y", "parse_log_sympy").parser_name == "sympy"
    assert specs.select("x/y", "parse_log_astropy").parser_name == "pytest_v2"


def test_task_override_and_unknown_parser() -> None:
    from envs.tasks import Task

    task = Task.from_dict({
        "instance_id": "demo-1", "repo": "django/django", "base_commit": "abc", "problem_statement": "p",
        "log_parser": "unittest",
    })  # fmt: skip
    assert specs.for_task(task).parser_name == "unittest"
    assert specs.for_task({"repo": "sympy/sympy", "instance_id": "sympy__sympy-1"}).parser_name == "sympy"
    with pytest.raises(specs.UnknownParserError) as raised:
        specs.select("django/django", "nose")
    message = str(raised.value)
    assert "'nose'" in message and all(name in message for name in log_parsers.PARSERS)


# --------------------------------------------------------------------------------------
# Reports: ours == get_eval_report / get_eval_tests_report / get_resolution_status / make_run_report
# --------------------------------------------------------------------------------------

# (log, our parser, FAIL_TO_PASS, PASS_TO_PASS): passes, failures, skips, xfails, missing ids,
# truncated parametrized ids, empty lists.
PT = "pkg/test_mixed.py::"
DJ = "{0} (probeapp.tests.Basics.{0})".format
REPORT_CASES = [
    ("pytest", "pytest", [PT + "test_pass", PT + "test_xfail"], [PT + "TestGroup::test_method"]),
    ("pytest", "pytest", [PT + "test_pass", PT + "test_fail"], [PT + "TestGroup::test_method"]),
    ("pytest", "pytest", [PT + "test_pass"], [PT + "test_skip", PT + "test_error"]),
    ("pytest", "pytest", [PT + "test_skip"], []),
    ("pytest", "pytest", [PT + "test_xpass"], [PT + "test_pass"]),
    ("pytest", "pytest", [PT + "test_param[//net"], [PT + "test_param[/tmp/data"]),
    ("pytest", "pytest", [], []),
    ("pytest-collection-error", "pytest", [PT + "test_pass"], ["pkg/test_broken_import.py::test_never"]),
    ("pytest-color-verbose", "pytest_v2", [PT + "test_param[a b]", PT + "test_fail"], [PT + "test_pass"]),
    ("pytest-color-verbose", "pytest_v2", [PT + "test_xfail"], [PT + "test_param[/tmp/data/file.txt]"]),
    ("django", "django", [DJ("test_ok"), DJ("test_noisy"), "Checks a documented thing."], [DJ("test_skip")]),
    ("django", "django", [DJ("test_ok"), DJ("test_fail"), DJ("test_error")], [DJ("test_sub")]),
    ("django", "django", [DJ("test_xfail")], [DJ("test_ok")]),
    ("sympy-probe", "sympy", ["test_ok"], ["test_xfail"]),
    ("sympy-probe", "sympy", ["test_ok", "test_fail"], []),
    ("sympy-own", "sympy", ["test_truediv", "test_basic"], ["test_ibasic"]),  # last in its file: missing
]


def _eval_log(test_output: str, exit_code: int | None = 1, *, applied: bool = True) -> str:
    """A whole eval log as the official eval script writes it around the test output."""
    parts = [">>>>> Applied Patch" if applied else ">>>>> Patch Apply Failed", "+ git status", eval_log.START_TEST_OUTPUT,
             test_output, "+ SWEBENCH_TEST_EXIT_CODE=$?", eval_log.END_TEST_OUTPUT]  # fmt: skip
    if exit_code is not None:
        parts.append(f"{eval_log.TEST_EXIT_CODE}: {exit_code}")
    return "\n".join(parts) + "\n"


def _official_report(tmp_path: Path, instance_id: str, patch: str | None, log: str, parser: str,
                     f2p: list[str], p2p: list[str]) -> dict:
    path = tmp_path / f"{instance_id}.log"
    path.write_text(log)
    spec = swebench_types.TestSpec(instance_id=instance_id, image="", eval_script_list=[], repo="x/y", version="",
                    FAIL_TO_PASS=f2p, PASS_TO_PASS=p2p, log_parser=f"parse_log_{parser}", eval_type="pass_and_fail")
    prediction = {"instance_id": instance_id, "model_name_or_path": "m", "model_patch": patch}
    return swebench_grading.get_eval_report(spec, prediction, str(path), include_tests_status=True)


@pytest.mark.parametrize("case", range(len(REPORT_CASES)))
def test_report_matches_official(corpus: dict[str, str], tmp_path: Path, case: int) -> None:
    log_name, parser, f2p, p2p = REPORT_CASES[case]
    statuses = log_parsers.PARSERS[parser](corpus[log_name])
    ours_block = report.tests_report(statuses, f2p, p2p)
    assert ours_block == swebench_grading.get_eval_tests_report(
        statuses, {"FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p})
    assert report.resolution_status(ours_block) == swebench_grading.get_resolution_status(ours_block)
    # the "to fail" lists, when asked for
    gold = {"FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p, "FAIL_TO_FAIL": p2p, "PASS_TO_FAIL": f2p}
    assert report.tests_report(statuses, f2p, p2p, fail_to_fail=p2p, pass_to_fail=f2p, calculate_to_fail=True) == (
        swebench_grading.get_eval_tests_report(statuses, gold, calculate_to_fail=True))
    # the whole per-instance report from a whole eval log
    log = _eval_log(corpus[log_name])
    ours = report.evaluate(f"case-{case}", "diff", log, log_parsers.PARSERS[parser], f2p, p2p)
    assert ours == _official_report(tmp_path, f"case-{case}", "diff", log, parser, f2p, p2p)


def test_resolution_levels_all_occur() -> None:
    """Every resolution level, on a status map with every status."""
    seen = set()
    statuses = {"a": "PASSED", "b": "FAILED", "c": "SKIPPED", "d": "XFAIL"}
    for f2p, p2p in ((["a", "d"], ["c"]), (["a", "b"], ["a"]), (["b"], ["a"]), (["a"], ["b"]), (["c"], [])):
        block = report.tests_report(statuses, f2p, p2p)
        seen.add(report.resolution_status(block))
        assert report.resolution_status(block) == swebench_grading.get_resolution_status(block)
    assert seen == {"RESOLVED_FULL", "RESOLVED_PARTIAL", "RESOLVED_NO"}


@pytest.mark.parametrize(
    "variant",
    ["apply-failed", "no-end-marker", "exit-code-but-no-failure", "empty-output", "no-tests-collected",
     "killed", "timeout", "patch-none", "patch-empty", "results-outside-markers", "fail-only"],
)  # fmt: skip
def test_log_verdicts_match_official(corpus: dict[str, str], tmp_path: Path, variant: str) -> None:
    f2p, p2p = [PT + "test_pass"], [PT + "TestGroup::test_method"]
    passing_only = "\n".join(line for line in corpus["pytest"].splitlines() if not line.startswith(("FAILED", "ERROR")))
    patch: str | None = "diff"
    eval_type = "pass_and_fail"
    log = {
        "apply-failed": _eval_log(corpus["pytest"], applied=False),
        "no-end-marker": _eval_log(corpus["pytest"]).replace(eval_log.END_TEST_OUTPUT, ""),
        "exit-code-but-no-failure": _eval_log(passing_only, exit_code=1),
        "empty-output": _eval_log("", exit_code=0),
        "no-tests-collected": _eval_log("collected 0 items\n\nno tests ran in 0.01s", exit_code=5),
        "killed": _eval_log("Killed", exit_code=137),
        "timeout": _eval_log(corpus["pytest"]) + ">>>>> Tests Timed Out\n",
        "patch-none": _eval_log(corpus["pytest"]),
        "patch-empty": _eval_log(corpus["pytest"]),
        "results-outside-markers": _eval_log("", exit_code=1) + corpus["pytest"],
        "fail-only": _eval_log(corpus["pytest"]),
    }[variant]
    if variant == "patch-none":
        patch = None
    elif variant == "patch-empty":
        patch = ""
    elif variant == "fail-only":
        eval_type, f2p = "fail_only", [PT + "test_pass", PT + "test_fail", PT + "test_missing"]
    path = tmp_path / "test_output.txt"
    path.write_text(log)
    spec = swebench_types.TestSpec(instance_id="i-1", image="", eval_script_list=[], repo="x/y", version="",
                    FAIL_TO_PASS=f2p, PASS_TO_PASS=p2p, log_parser="parse_log_pytest", eval_type=eval_type)
    official = swebench_grading.get_eval_report(
        spec, {"instance_id": "i-1", "model_name_or_path": "m", "model_patch": patch}, str(path), True)
    ours = report.evaluate("i-1", patch, log, log_parsers.parse_pytest, f2p, p2p, eval_type=eval_type)
    assert ours == official
    assert eval_log.read_eval_log(log, log_parsers.parse_pytest) == swebench_grading.get_logs_eval(spec, str(path))


def test_run_report_files_match_official(corpus: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our writers lay out report.json files; the official make_run_report reads them and
    writes the same summary as ours."""
    from swebench.harness.reporting import make_run_report

    run_id, model = "parity", "org/model-7b"
    f2p, p2p = [PT + "test_pass"], [PT + "TestGroup::test_method"]
    logs = {
        "inst-resolved": _eval_log(corpus["pytest"]),
        "inst-unresolved": _eval_log(corpus["pytest"]).replace("PASSED pkg/test_mixed.py::test_pass\n", ""),
        "inst-infra": _eval_log("Killed", exit_code=137),
        "inst-ambiguous": _eval_log("collected 0 items\nno tests ran", exit_code=5),
    }
    predictions = {iid: {"instance_id": iid, "model_name_or_path": model, "model_patch": "diff"} for iid in logs}
    predictions["inst-empty"] = {"instance_id": "inst-empty", "model_name_or_path": model, "model_patch": ""}
    predictions["inst-no-report"] = {"instance_id": "inst-no-report", "model_name_or_path": model, "model_patch": "d"}
    dataset = [{"instance_id": iid} for iid in [*predictions, "inst-not-submitted"]]
    for iid, log in logs.items():
        instance = report.evaluate(iid, "diff", log, log_parsers.parse_pytest, f2p, p2p)
        written = report.write_instance_report(tmp_path, run_id, model, instance, test_output=log)
        assert written == tmp_path / "logs/run_evaluation/parity/org__model-7b" / iid / "report.json"
    ours = report.write_run_report(tmp_path, run_id, predictions, [row["instance_id"] for row in dataset],
                                   report_dir=tmp_path / "ours")
    monkeypatch.chdir(tmp_path)  # the official function reads logs/run_evaluation relative to the cwd
    official = make_run_report(predictions, dataset, run_id, client=None, report_dir=str(tmp_path / "official"))
    assert ours.name == Path(official).name
    summary = json.loads(ours.read_text())
    assert summary == json.loads(Path(official).read_text())
    assert summary["resolved_ids"] == ["inst-resolved"]
    assert summary["failure_reasons"] == {"inst-ambiguous": "no_tests_collected", "inst-infra": "out_of_memory"}


def test_spec_parse_and_command_roundtrip(corpus: dict[str, str]) -> None:
    """A LogSpec's parser is the repository's: Django's log through specs.select == official."""
    spec = specs.select("django/django")
    assert spec.parse(corpus["django"]) == MAP_REPO_TO_PARSER_PY["django/django"](corpus["django"], None)
    assert spec.test_command([]).startswith("./tests/runtests.py")
