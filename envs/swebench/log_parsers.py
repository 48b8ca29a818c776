"""Test-log text → {test name: status}, read the way SWE-bench's official harness reads it.

Every parser here is a pure function of the log text. Names and statuses follow the official
harness (`swebench.harness.log_parsers`) exactly, quirks included, because FAIL_TO_PASS and
PASS_TO_PASS lists in SWE-bench datasets were produced by those parsers: a name spelled
differently is a test "missing from the log", which grades as a failure. Where the official
reading is odd, the docstring says so rather than silently doing better; `parse_unittest` is
the one parser with no official counterpart and reads its format fully.

Statuses are the harness's five words (`STATUSES`). A parser records the word it read off the
line, so on a malformed line (e.g. pytest's "ERROR: file or directory not found: x") the
official parsers record odd names or words; these never match a real test id and do no harm.
"""
from __future__ import annotations

import re
from typing import Callable

PASSED = "PASSED"
FAILED = "FAILED"
SKIPPED = "SKIPPED"
ERROR = "ERROR"
XFAIL = "XFAIL"
# The harness's TestStatus vocabulary. Order matters nowhere; a tuple keeps it immutable.
STATUSES = (FAILED, PASSED, SKIPPED, ERROR, XFAIL)

StatusMap = dict[str, str]
Parser = Callable[[str], StatusMap]


# --------------------------------------------------------------------------------------
# pytest: the `-rA` short test summary ("PASSED path::test", "FAILED path::test - msg")
# --------------------------------------------------------------------------------------

# "SKIPPED [3] path:12: reason" is pytest's grouped skip summary; "[3]" is a count, not a test.
_SKIP_COUNT = re.compile(r"\[\d+\]")


def _summary_words(line: str) -> list[str] | None:
    """The words of a `-rA` summary line, or None when the line is not one.

    A summary line starts with a status word. For FAILED lines pytest appends " - <message>";
    the harness turns every " - " into a space, so the message's words follow the test id
    and only the first word after the status is the id.
    """
    if not line.startswith(STATUSES):
        return None
    if line.startswith(FAILED):
        line = line.replace(" - ", " ")
    words = line.split()
    if len(words) < 2:
        return None
    if words[0] == SKIPPED and _SKIP_COUNT.fullmatch(words[1]):
        return None
    return words


def parse_pytest(log: str) -> StatusMap:
    """pytest `-rA`: one test per summary line, its id the word after the status.

    A parametrized id containing spaces is cut at the first space (as the harness does).
    XPASS lines are not recorded: the test is then missing, which grades as a failure.
    """
    statuses: StatusMap = {}
    for line in log.split("\n"):
        words = _summary_words(line)
        if words:
            statuses[words[1]] = words[0]
    return statuses


# A parametrized id: the function part and the bracketed parameters (greedy to the last "]").
_PARAMETRIZED = re.compile(r"(.*?)\[(.*)\]")


def _shorten_path_parameter(test_id: str) -> str:
    """An absolute-path parameter is reduced to its last component ("/tmp/x/a.txt" → "/a.txt"),
    so ids do not depend on where the repository was checked out. Protocol-relative ("//…")
    and glob ("*") parameters are left alone."""
    match = _PARAMETRIZED.search(test_id)
    if not match:
        return test_id
    function, parameters = match.groups()
    if parameters.startswith("/") and not parameters.startswith("//") and "*" not in parameters:
        parameters = "/" + parameters.rsplit("/", 1)[-1]
    return f"{function}[{parameters}]"


def parse_pytest_options(log: str) -> StatusMap:
    """pytest `-rA` for repositories whose parameters carry file paths (requests, pylint, pydicom)."""
    statuses: StatusMap = {}
    for line in log.split("\n"):
        words = _summary_words(line)
        if words:
            statuses[_shorten_path_parameter(words[1])] = words[0]
    return statuses


# The harness removes "[<digits>m" (the tail of an ANSI colour code) and every control
# character from 1 to 31 (ESC, tab, CR…) before reading a line.
_COLOUR_TAIL = re.compile(r"\[\d+m")
_CONTROL_CHARS = {code: None for code in range(1, 32)}


def parse_pytest_v2(log: str) -> StatusMap:
    """pytest output with colours, and older pytest's verbose "id STATUS" lines (astropy,
    scikit-learn, sphinx).

    Unlike `parse_pytest`, the id is every word after the status, so ids with spaces survive;
    only FAILED lines drop their " - <message>" tail. On XFAIL and ERROR lines pytest's
    " - <reason>" therefore stays part of the recorded name (as in the harness). A line that
    does not start with a status but ends with one is read as "<id words> <STATUS>".
    """
    statuses: StatusMap = {}
    for raw in log.split("\n"):
        line = _COLOUR_TAIL.sub("", raw).translate(_CONTROL_CHARS)
        if line.startswith(STATUSES):
            if line.startswith(FAILED):
                line = line.split(" - ", 1)[0]
            words = line.split()
            if len(words) >= 2 and not (words[0] == SKIPPED and _SKIP_COUNT.fullmatch(words[1])):
                statuses[" ".join(words[1:])] = words[0]
        elif line.endswith(STATUSES):
            words = line.split()
            if len(words) >= 2:
                # The last word ends with a status but may be longer ("XFAILED"); the harness
                # records the whole word.
                statuses[" ".join(words[:-1])] = words[-1]
    return statuses


def parse_matplotlib(log: str) -> StatusMap:
    """`parse_pytest`, with matplotlib's enum reprs in parameter ids replaced by their values
    (the dataset's ids were recorded on a version that printed them as numbers)."""
    return parse_pytest(log.replace("MouseButton.LEFT", "1").replace("MouseButton.RIGHT", "3"))


def parse_seaborn(log: str) -> StatusMap:
    """seaborn's logs: "FAILED id", "PASSED id", or a verbose "id PASSED …" line.
    Only passes and failures are recorded."""
    statuses: StatusMap = {}
    for line in log.split("\n"):
        words = line.split()
        if len(words) < 2:
            continue
        if line.startswith(FAILED):
            statuses[words[1]] = FAILED
        elif f" {PASSED} " in line:
            if words[1] == PASSED:
                statuses[words[0]] = PASSED
        elif line.startswith(PASSED):
            statuses[words[1]] = PASSED
    return statuses


# --------------------------------------------------------------------------------------
# Django's runner (tests/runtests.py --verbosity 2): unittest's verbose lines
# --------------------------------------------------------------------------------------

# Endings of a passing verbose line. Django's own output has used all three spellings.
_DJANGO_PASS_ENDINGS = (" ... ok", " ... OK", " ...  OK")
# One test of django__django-7188 prints a migration line right before its name.
_DJANGO_7188_PREFIX = "Applying sites.0002_alter_domain_unique...test_no_migrations"
# A long multi-line message printed by the code under test between "name ..." and "ok".
_DJANGO_INTERRUPTED_PASSES = (
    re.compile(r"^(.*?)\s\.\.\.\sTesting\ against\ Django\ installed\ in\ ((?s:.*?))\ silenced\)\.\nok$", re.M),
    re.compile(r"^(.*?)\s\.\.\.\sInternal\ Server\ Error:\ \/(.*)\/\nok$", re.M),
    re.compile(r"^(.*?)\s\.\.\.\sSystem check identified no issues \(0 silenced\)\nok$", re.M),
)
# A test in Django's admin_scripts suite whose output spans lines; the harness records it by
# this fixed name whenever the text appears.
_DJANGO_VERSION_TEST = "--version is equivalent to version"


def parse_django(log: str) -> StatusMap:
    """Django's runner at verbosity 2: "<name> ... ok|skipped '…'|FAIL|ERROR".

    The name is the text before " ... ": "test_x (module.Class)" (or "(module.Class.test_x)"
    on Python ≥ 3.11), or the first line of the test's docstring when it has one, exactly as
    SWE-bench's Django test lists spell it. Output printed by a test between "name ..." and
    its result is handled for passes ("ok" on a later line). As in the harness:

    * "FAIL: name" / "ERROR: name" headers also record their first word alone ("test_x");
    * "expected failure" and "unexpected success" are not recorded (missing → failure);
    * a test whose subtests failed is not recorded under its own name.
    """
    statuses: StatusMap = {}
    last_named: str | None = None  # the latest "name ... " seen: an "ok" on its own line is its
    for raw in log.split("\n"):
        line = raw.strip()
        if _DJANGO_VERSION_TEST in line:
            statuses[_DJANGO_VERSION_TEST] = PASSED
        if " ... " in line:
            last_named = line.split(" ... ")[0]
        for ending in _DJANGO_PASS_ENDINGS:
            if line.endswith(ending):
                if line.startswith(_DJANGO_7188_PREFIX):
                    line = line.split("...", 1)[-1].strip()
                statuses[line.rsplit(ending, 1)[0]] = PASSED
                break
        if " ... skipped" in line:
            statuses[line.split(" ... skipped")[0]] = SKIPPED
        if line.endswith(" ... FAIL"):
            statuses[line.split(" ... FAIL")[0]] = FAILED
        if line.startswith("FAIL:"):
            statuses[line.split()[1]] = FAILED
        if line.endswith(" ... ERROR"):
            statuses[line.split(" ... ERROR")[0]] = ERROR
        if line.startswith("ERROR:"):
            statuses[line.split()[1]] = ERROR
        if line.startswith("ok") and last_named is not None:
            statuses[last_named] = PASSED
    for pattern in _DJANGO_INTERRUPTED_PASSES:
        for match in pattern.finditer(log):
            statuses[match.group(1)] = PASSED
    return statuses


# --------------------------------------------------------------------------------------
# SymPy's runner (bin/test → sympy.testing.runtests, verbose)
# --------------------------------------------------------------------------------------

# A failure's traceback header: "_____ sympy/core/tests/test_x.py:test_y _____" ("::" for
# failures, ":" for exceptions in recent SymPy). The harness matches this loosely: any text
# after a space, up to ".py:", then up to the last space of the line. Kept as loose, so the
# same (rare) stray lines count.
_SYMPY_FAILURE_HEADER = re.compile(r"(_*) (.*)\.py:(.*) (_*)")
# Per-test verbose lines: "test_name ok|F|E" (also f, X, s, w, T, which the harness ignores).
_SYMPY_RESULT_WORDS = {"ok": PASSED, "F": FAILED, "E": ERROR}


def parse_sympy(log: str) -> StatusMap:
    """SymPy's verbose runner: "test_x ok|F|E" per test, plus "path.py:test_x" names (FAILED)
    from failure headers. Expected failures (f), xpasses (X), skips (s), slow skips (w) and
    timeouts (T) are not recorded: missing, they grade as failures, as in the harness.

    The last test of each file is not recorded either: the runner ends its line with the
    file's verdict ("test_last ok        [OK]"), which ends with none of the result words. The
    harness has the same blind spot, and SWE-bench's SymPy lists were made with it.
    """
    statuses: StatusMap = {}
    for _, stem, rest, _ in _SYMPY_FAILURE_HEADER.findall(log):
        statuses[f"{stem}.py:{rest}"] = FAILED
    for raw in log.split("\n"):
        line = raw.strip()
        if not line.startswith("test_"):
            continue
        for word, status in _SYMPY_RESULT_WORDS.items():
            if line.endswith(" " + word):
                statuses[line.split()[0]] = status
    return statuses


# --------------------------------------------------------------------------------------
# Plain unittest (python -m unittest -v): no official counterpart
# --------------------------------------------------------------------------------------

# What unittest's verbose runner writes after "name ... ". "skipped" carries its reason.
_UNITTEST_RESULTS = {
    "ok": PASSED,
    "FAIL": FAILED,
    "ERROR": ERROR,
    "expected failure": XFAIL,  # as pytest's xfail, which the harness counts as a pass
    "unexpected success": FAILED,  # unittest's own verdict: the run is not successful
}
_UNITTEST_HEADER = re.compile(r"^(FAIL|ERROR|UNEXPECTED SUCCESS): (.+)$")
# A subtest's name: the parent's "name (id)" followed by " (params)" or " [msg]".
_UNITTEST_SUBTEST = re.compile(r"^(\S+ \([^()]*\)) [(\[].*[)\]]$")


def _unittest_result(text: str) -> str | None:
    if text.startswith("skipped"):
        return SKIPPED
    return _UNITTEST_RESULTS.get(text)


def parse_unittest(log: str) -> StatusMap:
    """unittest's verbose runner (`python -m unittest -v`, Django's runner at verbosity 2).

    Names as in `parse_django` (the text before " ... "). Unlike the Django parser this one
    reads every result unittest writes: "expected failure" is XFAIL, "unexpected success" is
    FAILED, a result written on a later line (after the test's own output) belongs to the
    latest "name ...", and a failed subtest ("name (id) (i=1) ... FAIL") also fails its test.
    """
    statuses: StatusMap = {}
    pending: str | None = None  # a "name ..." whose result has not been written yet
    for raw in log.split("\n"):
        line = raw.strip()
        header = _UNITTEST_HEADER.match(line)
        if header:
            kind, name = header.groups()
            status = ERROR if kind == "ERROR" else FAILED
            statuses[name] = status
            parent = _UNITTEST_SUBTEST.match(name)
            if parent:
                statuses[parent.group(1)] = status
            continue
        name, sep, rest = line.partition(" ...")
        if sep and name:
            rest = rest.strip()
            result = _unittest_result(rest)
            if result:
                statuses[name] = result
                pending = None
            else:
                pending = name  # the test printed something, or has subtests
            continue
        result = _unittest_result(line)
        if result and pending is not None:
            statuses[pending] = result
            pending = None
    for name in list(statuses):
        parent = _UNITTEST_SUBTEST.match(name)
        if parent and statuses[name] in (FAILED, ERROR):
            statuses[parent.group(1)] = statuses[name]
    return statuses


# Every parser by its short name (the `log_parser` a task may name; see envs.swebench.specs).
PARSERS: dict[str, Parser] = {
    "pytest": parse_pytest,
    "pytest_options": parse_pytest_options,
    "pytest_v2": parse_pytest_v2,
    "matplotlib": parse_matplotlib,
    "seaborn": parse_seaborn,
    "django": parse_django,
    "sympy": parse_sympy,
    "unittest": parse_unittest,
}
