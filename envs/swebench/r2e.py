"""Native R2E-Gym rows (R2E-Gym-Subset, -Lite, -V1): loading, image layers and the reward's pure half.

What R2E-Gym does (read from its public code, `src/r2egym/agenthub/runtime/docker.py`,
`repo_analysis/execution_log_parser.py`, `repo_analysis/validate_docker_and_hf.py`,
`commit_models/diff_classes.py`, `repo_analysis/base_dockerfiles/*`, `install_utils/*`):

* **Rows** carry `repo_name` (a bare name: "pandas", "sympy", …), `docker_image`
  ("namanjain12/<repo>_final:<commit>"), `commit_hash` (the fix commit), `problem_statement`
  (often wrapped in `[ISSUE] … [/ISSUE]`, which R2E's runtime strips off), `parsed_commit_content`
  (the fix commit as JSON: `file_diffs` with header/index/---/+++/hunks, `old_commit_hash`,
  `new_commit_hash`), `execution_result_content` (JSON: the hidden tests' source, the test logs
  before and after the fix), `expected_output_json` (JSON {test: "PASSED"|"FAILED"|"ERROR"}:
  the log parse at the fix commit), `modified_files`, `relevant_files`, `prompt`, counts. No
  SWE-bench fields (no base_commit, FAIL_TO_PASS, patch or test_patch).
* **Images** are built at the fix's parent (`git checkout <commit>^` of a full clone, so the fix
  commit is still in `.git`), repository at `/testbed`, a uv virtualenv at `/testbed/.venv`
  (`ENV VIRTUAL_ENV`, PATH), the run script at `/testbed/run_tests.sh`
  (`.venv/bin/python -W ignore -m pytest -rA r2e_tests`, a pytest-like unittest runner for some
  repositories), the hidden tests at `/r2e_tests` (older images: `/testbed/r2e_tests`, plus
  expected_test_output.json & co. in the repository). The install step may edit tracked files
  and leaves `install.sh` untracked.
* **Their runtime** symlinks the venv into /root, moves `run_tests.sh` and `r2e_tests` to /root,
  links `/root/r2e_tests` back as `/testbed/r2e_tests`, deletes `*.pyc`/`__pycache__`, then lets
  the agent work *in that same container* (root, tests a symlink away). The reward runs
  `bash /root/run_tests.sh` (cwd /testbed, 300 s), strips ANSI colour and `\\r` from stdout+stderr,
  parses the text after "short test summary info" (a line with PASSED → PASSED, else FAILED,
  else ERROR; the test named by the `::` parts after the file joined with ".", cut at " - "),
  strips colour codes from the keys, cuts every key at " - ", and pays 1.0 only when the parse
  has exactly as many keys as `expected_output_json` and every key has the expected status
  (so: the two maps are equal), else 0.0.

What we do instead, and why (`envs.grading` runs the container part):

* **Two images from the row's image**, both through `sandboxes.prebuilt_images` (history cut at
  HEAD, tree handed to uid 1000) plus a layer of this module's: the **agent's**
  (`agent_layer_script`) deletes the hidden tests, the run script and every file that carries
  expected outputs, checks nothing named so survives anywhere on the filesystem, and fails the
  build on an image not laid out as R2E's; the **grader's** (`grader_layer_script`) keeps the
  tests at `/r2e_tests` and moves the run script to `/r2e_grading/`, both root-owned and
  read-only to uid 1000 (the code under test cannot rewrite them). Both layers then commit the
  working tree as the image ships it (install edits, install.sh) with a fixed author and date,
  so both images have the same HEAD and the agent's diff holds only the agent's changes; that
  commit is the task's `base_commit` (read from the image label by `envs.task_images`).
* **The expected statuses stay on the host** (`Task.extra["r2e"]`); `execution_result_content`
  and `prompt` (which embed the hidden tests' source and logs) and `parsed_commit_content` are
  dropped at load, after deriving the gold patch (R2E's: the commit's non-test Python files),
  the base and the FAIL_TO_PASS / PASS_TO_PASS split (diagnostic only: tests whose status the
  fix changes / keeps).
* **Grading** starts a fresh container from the grader's image (never the agent's), screens and
  applies the patch as for every task, deletes `*.pyc`/`__pycache__`, links `/r2e_tests` as
  `/testbed/r2e_tests`, runs the run script alone in its own exec into a scratch log (activation:
  the venv), parses the log with R2E's rules and pays R2E's reward.

Defences that apply: patch screening (tests/config/hooks dropped, and here also `r2e_tests/`,
`run_tests.sh`, the expected-output files and `.venv/`, the environment), the static scan plus
the log runner's stricter scan plus "short test summary" / hidden-path literals, the fresh
container from the clean grading image (git history stops at the base), the protected-file
check after applying (every file the apply wrote), byte code deleted before the run (a patched-in
.pyc cannot stand in for reviewed source), tests and run script not writable by the code under
test, the log written by the grader's shell to a scratch file, the exit status from the trusted
shell, and four run-time checks on the log (`verdict`): a second "short test summary info" (a
forged summary opened before the real one: R2E reads the text between the first two), result
lines after the runner's closing line that change the parse (R2E keeps a test's last line), a
failing test whose message carries "PASSED" (R2E's parser counts that line as a pass), and a
runner that failed while the log shows no failing test. Each scores 0; the first three pay 1.0
under R2E-Gym's own reward (tests/envs/test_r2e_e2e.py shows it).

Defences that cannot apply: our trusted pytest launcher and plugin and the JUnit cross-check
(the runner is R2E's own script, sometimes not pytest, and parity requires reading its log with
its rules); so, as on the SWE-bench log path (`envs.swebench.log_grading`), code under test runs
in the tests' process and could still forge status lines inside the summary block at run time
(e.g. a background thread timed to print during it). The deleted tests are gone from the agent's
container filesystem, but remain in the original image's lower layers: anyone with access to the
Docker engine (`docker save`) can read them; the agent has none.

Deviations from R2E's reward: tests run as uid 1000 in a fresh container (theirs: root, the
agent's container), no network (their setup's `uv pip install chardet` is skipped), tests linked
from `/r2e_tests` (theirs: `/root/r2e_tests`), activation by the venv (theirs: a PATH with
/root/.venv/bin), and the checks above can turn an R2E 1.0 into 0; a key set of the right size
with an unknown key raises KeyError in their code and scores 0 here.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from envs.swebench.datasets import Profile

# --- where R2E-Gym's images keep things (see the module docstring) ---------------------
TESTS_DIR = "/r2e_tests"  # the hidden tests in the original image (and in the grader's)
TESTS_LINK = "r2e_tests"  # where the run script looks for them, relative to the workdir
RUN_SCRIPT = "run_tests.sh"  # in the workdir of the original image
GRADER_DIR = "/r2e_grading"  # the run script in the grader's image (root-owned)
# Files older images keep in the repository directory (R2E's SKIP_FILES): tests, expected outputs,
# the commit, the synthetic issue. None may reach the agent.
HIDDEN_REPO_FILES = (
    RUN_SCRIPT, "syn_issue.json", "expected_test_output.json", "execution_result.json", "parsed_commit.json",
    "modified_files.json", "modified_entities.json",
)
SUMMARY_MARKER = "short test summary info"
STATUSES = ("PASSED", "FAILED", "ERROR")
AGENT_VARIANT = "r2e-agent"
GRADER_VARIANT = "r2e-grader"
# The environment commit both layers make: fixed identity and date, so both images share a HEAD.
SNAPSHOT_IDENTITY = {
    "GIT_AUTHOR_NAME": "agent-rl", "GIT_AUTHOR_EMAIL": "agent-rl@localhost",
    "GIT_COMMITTER_NAME": "agent-rl", "GIT_COMMITTER_EMAIL": "agent-rl@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
}
SNAPSHOT_MESSAGE = "agent-rl: the environment as the image ships it (install edits, untracked files)"

# The upstream repositories of R2E-Gym's repo_name values (their Dockerfiles' clone URLs): the
# task's `repo` and the SWE-bench-style id "<owner>__<name>-<commit>".
REPOSITORIES = {
    "aiohttp": "aio-libs/aiohttp", "coveragepy": "nedbat/coveragepy", "datalad": "datalad/datalad",
    "numpy": "numpy/numpy", "orange3": "biolab/orange3", "pandas": "pandas-dev/pandas",
    "pillow": "python-pillow/Pillow", "pyramid": "Pylons/pyramid", "scrapy": "scrapy/scrapy",
    "sympy": "sympy/sympy", "tornado": "tornadoweb/tornado",
}
# Row fields that mark a native row; and those dropped at load (large, or carrying the hidden
# tests' source and logs).
NATIVE_FIELDS = ("expected_output_json", "parsed_commit_content", "execution_result_content")
DROPPED_FIELDS = ("parsed_commit_content", "execution_result_content", "prompt", "modified_entity_summaries")
# Small metadata kept under extra["r2e"].
KEPT_FIELDS = ("modified_files", "relevant_files", "num_non_test_files", "num_non_test_func_methods",
               "num_non_test_lines")

_HEX = re.compile(r"[0-9a-fA-F]{7,40}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_ANSI = re.compile(r"\x1b\[[0-9;]*m|\r")  # what R2E strips from the test output
_KEY_COLOUR = re.compile("\u001b\\[\\d+m")  # what R2E strips from parsed and expected keys
# The closing line of pytest and of R2E's pytest-like unittest runner: "==== 1 failed, 2 passed in 0.57s ===="
_FINAL_LINE = re.compile(r"^=+ .*\bin [0-9.]+s\b.* =+\s*$")


class R2ERowError(ValueError):
    """A native R2E-Gym row that cannot become a task; names the row and the field."""


# ======================================================================================
# Rows → tasks
# ======================================================================================


def is_native_row(row: Any) -> bool:
    """A row in R2E-Gym's own format (not SWE-bench's): no FAIL_TO_PASS / base_commit, and one
    of R2E's fields (expected_output_json, parsed_commit_content, execution_result_content), or
    `repo_name` with `docker_image`."""
    if not isinstance(row, Mapping) or row.get("FAIL_TO_PASS") or row.get("base_commit"):
        return False
    return any(name in row for name in NATIVE_FIELDS) or ("repo_name" in row and "docker_image" in row)


def is_native_task(task: Any) -> bool:
    """A task loaded from a native R2E-Gym row (graded by `envs.grading` the R2E way)."""
    extra = getattr(task, "extra", None) or {}
    return isinstance(extra.get("r2e"), Mapping)


def _row_name(row: Mapping[str, Any], source: str) -> str:
    name = row.get("instance_id") or row.get("docker_image") or (
        f"{row.get('repo_name')}@{row.get('commit_hash')}" if row.get("repo_name") else "<unnamed R2E-Gym row>")
    return f"R2E-Gym row {str(name)!r}" + (f" (from {source})" if source else "")


def _fail(row: Mapping[str, Any], source: str, name: str, why: str) -> R2ERowError:
    return R2ERowError(f"{_row_name(row, source)}: field {name} {why}")


def _json_field(row: Mapping[str, Any], source: str, name: str, kind: type) -> Any:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _fail(row, source, name, "is missing or empty")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _fail(row, source, name, f"is not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
    if not isinstance(value, kind):
        raise _fail(row, source, name, f"must be a JSON {'object' if kind is dict else kind.__name__}, "
                                       f"got {type(value).__name__}")
    return value


def problem_text(statement: str) -> str:
    """R2E's task instruction: the text between [ISSUE] and [/ISSUE] when present, else all of it."""
    match = re.search(r"\[ISSUE\](.*)\[/ISSUE\]", statement, re.DOTALL)
    return (match.group(1) if match else statement).strip()


def expected_statuses(row: Mapping[str, Any], source: str = "") -> dict[str, str]:
    """`expected_output_json` as {test: status}, checked: an object of R2E's statuses, not empty."""
    expected = _json_field(row, source, "expected_output_json", dict)
    if not expected:
        raise _fail(row, source, "expected_output_json", "is empty: every run would match it, fix or no fix")
    bad = {k: v for k, v in expected.items() if not isinstance(k, str) or v not in STATUSES}
    if bad:
        key, value = next(iter(bad.items()))
        raise _fail(row, source, "expected_output_json",
                    f"maps {key!r} to {value!r}; statuses are {', '.join(STATUSES)}")
    return dict(expected)


def map_native_row(row: Mapping[str, Any], profile: "Profile", *, source: str = "", registry: str | None = None,
                   namespace: str | None = None) -> dict[str, Any]:
    """A native R2E-Gym row → a row `Task.from_dict` takes (see the module docstring). Missing
    or malformed fields raise R2ERowError naming the row and the field."""
    from envs.swebench import datasets

    repo_name = row.get("repo_name")
    if not isinstance(repo_name, str) or not repo_name.strip():
        raise _fail(row, source, "repo_name", "is missing or empty")
    repo_name = repo_name.strip()
    try:
        image, origin = datasets.resolve_image(row, profile, source=source, registry=registry, namespace=namespace)
    except datasets.DatasetRowError as exc:
        raise R2ERowError(str(exc).replace(datasets._where(row, source), _row_name(row, source), 1)) from None
    commit = _json_field(row, source, "parsed_commit_content", dict)
    diffs = commit.get("file_diffs")
    if not isinstance(diffs, list):
        raise _fail(row, source, "parsed_commit_content", "has no file_diffs list")
    commit_hash = row.get("commit_hash") or commit.get("new_commit_hash")
    if not isinstance(commit_hash, str) or not _HEX.fullmatch(commit_hash.strip()):
        raise _fail(row, source, "commit_hash", f"must be the fix commit's hash, got {commit_hash!r}")
    commit_hash = commit_hash.strip()
    statement = row.get("problem_statement")
    if not isinstance(statement, str) or not problem_text(statement):
        raise _fail(row, source, "problem_statement", "is missing or empty")
    expected = expected_statuses(row, source)
    try:
        gold = gold_patch(commit)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise _fail(row, source, "parsed_commit_content", f"is not an R2E-Gym parsed commit ({type(exc).__name__}: {exc})") from None
    before: dict[str, str] | None = None
    test_files: list[str] = []
    if row.get("execution_result_content") not in (None, ""):
        result = _json_field(row, source, "execution_result_content", dict)
        stdout = result.get("old_commit_res_stdout")
        before = normalize(parse_log(clean_output(stdout))) if isinstance(stdout, str) else None
        names = result.get("test_file_names") or []
        test_files = [str(n) for n in names] if isinstance(names, list) else []
    expected_norm = normalize(expected)
    changed = [k for k, v in expected_norm.items() if before is None or before.get(k) != v]
    kept = [k for k in expected_norm if k not in set(changed)]

    instance_id = row.get("instance_id")
    if instance_id is not None and (not isinstance(instance_id, str) or not instance_id.strip()):
        raise _fail(row, source, "instance_id", f"must be a non-empty string, got {instance_id!r}")
    upstream = REPOSITORIES.get(repo_name.lower(), repo_name)
    if not instance_id:
        owner, _, name = upstream.partition("/")
        instance_id = f"{owner}__{name}-{commit_hash}" if name else f"{repo_name}-{commit_hash}"
    old = commit.get("old_commit_hash")
    # R2E records the base as "<fix>^" (its image is built at that revision); a full sha is kept.
    # Either way envs.task_images replaces it with the adapted image's HEAD (the environment commit).
    base = old.strip() if isinstance(old, str) and _FULL_SHA.fullmatch(old.strip()) else f"{commit_hash}^"
    meta: dict[str, Any] = {"repo_name": repo_name, "commit_hash": commit_hash, "expected": expected,
                            "test_files": test_files, "row_base_commit": old if isinstance(old, str) else None}
    for name in KEPT_FIELDS:
        if name in row:
            meta[name] = row[name]
    extra = dict(row.get("extra") or {}) if isinstance(row.get("extra"), Mapping) else {}
    extra.update({
        "dataset": profile.name, datasets.IMAGE_SOURCE_KEY: origin, "log_parser_resolved": "r2e-gym",
        "r2e": meta, "dropped_fields": [n for n in DROPPED_FIELDS if n in row],
    })
    out: dict[str, Any] = {
        "instance_id": instance_id.strip(), "repo": upstream, "base_commit": base,
        "problem_statement": problem_text(statement), "patch": gold, "test_patch": "",
        "FAIL_TO_PASS": changed, "PASS_TO_PASS": kept, "image": image, "workdir": datasets.WORKDIR,
        "env_activate": row.get("env_activate", datasets.VENV_ACTIVATE), "extra": extra,
    }
    for name in ("test_timeout_s", "exec_timeout_s", "suite", "difficulty"):
        if name in row:
            out[name] = row[name]
    return out


def _is_test_path(path: str) -> bool:
    """R2E's FileDiff.is_test_file: the gold patch leaves these out."""
    parts = path.split("/")
    return (path.endswith("_test.py") or path.startswith("test_") or parts[-1].startswith("test_")
            or any(p in ("tests", "Tests", "test", "Test") for p in parts))


def _range(value: Mapping[str, Any]) -> str:
    start, length = value["start"], value.get("length")
    return f"{int(start)}" if length is None else f"{int(start)},{int(length)}"


_LINE_PREFIX = {"context": " ", "added": "+", "deleted": "-", "note": "\\ "}


def _file_diff_text(diff: Mapping[str, Any]) -> str:
    header = diff["header"]
    path = header["file"]["path"]
    text = f"diff --git a/{path} b/{path}\n"
    if header.get("misc_line"):
        text += header["misc_line"] + "\n"
    index = diff.get("index_line")
    if index:
        mode = index.get("mode") or ""
        text += f"index {index['old_commit_hash']}..{index['new_commit_hash']}{' ' if mode else ''}{mode}\n"
    if diff.get("is_binary_file"):
        text += (diff.get("binary_line") or "") + "\n"
    if diff.get("minus_file") and diff.get("plus_file"):
        text += f"--- {diff['minus_file']['path']}\n+++ {diff['plus_file']['path']}\n"
    for hunk in diff.get("hunks") or []:
        desc = hunk["descriptor"]
        text += f"@@ -{_range(desc['old_range'])} +{_range(desc['new_range'])} @@"
        text += f" {desc['section']}\n" if desc.get("section") else "\n"
        for line in hunk["line_group"]["all_lines"]:
            kind = line["type"]
            if kind not in _LINE_PREFIX:
                raise ValueError(f"unknown line type {kind!r}")
            text += f"{_LINE_PREFIX[kind]}{line['content']}\n"
    return text


def gold_patch(commit: Mapping[str, Any]) -> str:
    """R2E's gold patch (`ParsedCommit.get_patch(test_file=False)`): the commit's non-test Python files."""
    return "".join(
        _file_diff_text(diff) for diff in commit["file_diffs"]
        if diff["header"]["file"]["path"].endswith(".py") and not _is_test_path(diff["header"]["file"]["path"])
    )


# ======================================================================================
# The log and the reward (parity with R2E-Gym's parse_log_pytest and _calculate_reward_r2e)
# ======================================================================================


def clean_output(output: str) -> str:
    """What R2E does to the run's output before parsing: ANSI colour codes and \\r removed."""
    return _ANSI.sub("", output)


def _summary(log: str) -> str | None:
    # R2E: log.split(marker)[1]: the text between the first marker and the next one (or the end).
    if SUMMARY_MARKER not in log:
        return None
    return log.split(SUMMARY_MARKER)[1]


def _name(line: str) -> str:
    return ".".join(line.split("::")[1:])


def parse_lines(lines: list[str]) -> dict[str, str]:
    """R2E's per-line rule: "PASSED" anywhere in the line → PASSED, else "FAILED" → FAILED, else
    "ERROR" → ERROR; the test is the `::` parts after the file joined by "." (cut at " - " for
    FAILED and ERROR); a later line wins."""
    statuses: dict[str, str] = {}
    for line in lines:
        if "PASSED" in line:
            statuses[_name(line)] = "PASSED"
        elif "FAILED" in line:
            statuses[_name(line).split(" - ")[0]] = "FAILED"
        elif "ERROR" in line:
            statuses[_name(line).split(" - ")[0]] = "ERROR"
    return statuses


def parse_log(log: str | None) -> dict[str, str]:
    """{test: status} from a run's output, as R2E-Gym's `parse_log_pytest` reads it."""
    if log is None:
        return {}
    summary = _summary(log)
    return {} if summary is None else parse_lines(summary.strip().split("\n"))


def normalize(statuses: Mapping[str, str]) -> dict[str, str]:
    """R2E's key clean-up before comparing: colour codes removed, each key cut at " - ", in
    sorted key order (so of two keys that become one, the later in sorted order wins)."""
    decoloured = {_KEY_COLOUR.sub("", k): v for k, v in statuses.items()}
    return {k.split(" - ")[0]: decoloured[k] for k in sorted(decoloured)}


def reward(parsed: Mapping[str, str], expected: Mapping[str, str]) -> float:
    """R2E-Gym's reward: 1.0 when the normalized parse and expected maps have the same size and
    every parsed key has its expected status (they are equal), else 0.0. Their code raises
    KeyError for an unknown key among as many keys; that is a 0.0 here."""
    got, want = normalize(parsed), normalize(expected)
    if len(got) != len(want):
        return 0.0
    return 1.0 if all(k in want and got[k] == want[k] for k in got) else 0.0


def _strict_lines(lines: list[str]) -> dict[str, str]:
    """The same lines read by their leading status word only (how pytest writes them)."""
    statuses: dict[str, str] = {}
    for line in lines:
        word = line.split(" ", 1)[0]
        if word in STATUSES:
            statuses[_name(line).split(" - ")[0]] = word
    return statuses


@dataclass
class Verdict:
    """The R2E reward of one run, and why it does not count when it does not."""

    reward: float = 0.0
    parsed: dict[str, str] = field(default_factory=dict)  # normalized
    matched: list[str] = field(default_factory=list)  # expected keys with their expected status
    mismatched: list[str] = field(default_factory=list)  # expected keys with another status, or absent
    unexpected: list[str] = field(default_factory=list)  # parsed keys not in expected_output_json
    tamper: list[str] = field(default_factory=list)
    why: str = ""  # non-empty: the run does not count (an infrastructure-like failure)

    def summary(self) -> str:
        line = f"r2e: {len(self.matched)} of {len(self.matched) + len(self.mismatched)} expected statuses match"
        if self.mismatched:
            line += f"; differ or missing: {', '.join(self.mismatched[:10])}"
        if self.unexpected:
            line += f"; not expected: {', '.join(self.unexpected[:10])}"
        return line


def verdict(expected: Mapping[str, str], output: str, exit_code: int) -> Verdict:
    """R2E's reward for the run's raw output and the runner's exit status, with the run-time
    checks of the module docstring (tamper findings and runs that do not count score 0)."""
    log = clean_output(output)
    parsed_raw = parse_log(log)
    out = Verdict(parsed=normalize(parsed_raw))
    want = normalize(expected)
    for key, status in want.items():
        (out.matched if out.parsed.get(key) == status else out.mismatched).append(key)
    out.unexpected = [k for k in out.parsed if k not in want]
    if log.count(SUMMARY_MARKER) > 1:
        out.tamper.append(f"the test output holds {log.count(SUMMARY_MARKER)} '{SUMMARY_MARKER}' lines; "
                          "the runner writes one (a forged summary)")
    summary = _summary(log)
    if summary is not None:
        lines = summary.strip().split("\n")
        closing = next((i for i, line in enumerate(lines) if _FINAL_LINE.match(line.strip())), None)
        if closing is not None and normalize(parse_lines(lines[:closing + 1])) != out.parsed:
            out.tamper.append("result lines after the runner's closing line change the parse (written after the run)")
        strict = normalize(_strict_lines(lines))
        flipped = sorted(k for k, v in out.parsed.items() if v == "PASSED" and strict.get(k) in ("FAILED", "ERROR"))
        if flipped:
            out.tamper.append(f"{', '.join(flipped[:5])}: failed, but the failure message carries 'PASSED' "
                              "(R2E's parser would count it as passed)")
    if not log.strip():
        out.why = "the test run wrote no output"
    elif not out.parsed:
        out.why = f"no test results after '{SUMMARY_MARKER}' in the runner's output (exit {exit_code})"
    elif exit_code != 0 and not any(v in ("FAILED", "ERROR") for v in out.parsed.values()):
        out.why = f"the runner exited {exit_code} yet its log shows no failing test"
    if not out.tamper and not out.why:
        out.reward = reward(parsed_raw, expected)
    return out


# ======================================================================================
# Patch screening (on top of envs.patch_screen)
# ======================================================================================

# Added lines that could forge R2E's summary (on top of log_grading.scan_for_log_runner).
TAMPER_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"short test summary", "writes the runner's summary header"),
    (r"r2e_tests|run_tests\.sh|expected_output|expected_test_output", "reaches for the hidden tests or expected outputs"),
)


def protection_reason(path: str, hidden: list[str] | tuple[str, ...] = ()) -> str | None:
    """Why the agent may not change `path` in an R2E task: patch_screen's rules, plus the hidden
    tests' directory, the run script and the expected-output files."""
    import posixpath

    from envs.patch_screen import protection_reason as generic

    norm = posixpath.normpath(path)
    if norm.split("/")[0] == TESTS_LINK:
        return "R2E-Gym's hidden tests"
    if norm.split("/")[0] == ".venv":
        return "the task's environment (.venv), not the repository"
    if norm in HIDDEN_REPO_FILES:
        return "R2E-Gym's run script or expected outputs"
    return generic(norm, hidden)


def screen_patch(patch: str) -> tuple[str, list[str]]:
    """(patch without protected sections, sorted dropped paths), by `protection_reason`."""
    from envs.patch_screen import split_patch

    kept: list[str] = []
    dropped: set[str] = set()
    for section in split_patch(patch):
        if section.is_symlink or any(protection_reason(p) for p in section.paths):
            dropped.update(section.paths)
        else:
            kept.append(section.text)
    return "".join(kept), sorted(dropped)


def scan_patch(patch: str) -> list[str]:
    """Tamper findings for added lines that could fake R2E's log: patch_screen's and log_grading's
    scans plus `TAMPER_PATTERNS`."""
    from envs.patch_screen import scan_patch as generic, split_patch
    from envs.swebench.log_grading import scan_for_log_runner

    findings = generic(patch) + scan_for_log_runner(patch)
    for section in split_patch(patch):
        path = section.paths[-1] if section.paths else "?"
        body = "\n".join(l[1:] for l in section.text.splitlines() if l.startswith("+") and not l.startswith("+++ "))
        for pattern, why in TAMPER_PATTERNS:
            match = re.search(pattern, body)
            if match:
                findings.append(f"{path}: {why} ({match.group(0)!r})")
    return findings


# ======================================================================================
# Image layers (run as root after sandboxes.prebuilt_images' history cut) and grading commands
# ======================================================================================


def _common_tail(workdir: str, uid: int) -> str:
    """Both layers end alike, so both images get the same tree and the same environment commit:
    expected-output files gone (a tracked file of that name restored from git), caches gone, the
    working tree committed as shipped, .git handed back to the agent's uid, the base printed."""
    wd = shlex.quote(workdir)
    identity = " ".join(f"{k}={shlex.quote(v)}" for k, v in SNAPSHOT_IDENTITY.items())
    files = " ".join(shlex.quote(f) for f in HIDDEN_REPO_FILES)
    return f"""
cd {wd}
r2e_g() {{ git -c safe.directory='*' -c core.hooksPath=/dev/null -c core.fsmonitor=false "$@"; }}
for f in {files}; do
  rm -f "{workdir}/$f"
  if [ -d .git ] && r2e_g cat-file -e "HEAD:$f" 2>/dev/null; then r2e_g checkout -q HEAD -- "$f"; fi
done
rm -rf {wd}/{TESTS_LINK} {wd}/.pytest_cache
find {wd} -name '*.pyc' -delete
find {wd} -name __pycache__ -prune -exec rm -rf {{}} +
if [ -d .git ]; then
  r2e_g add -A .
  if ! r2e_g diff --cached --quiet; then
    env {identity} git -c safe.directory='*' -c core.hooksPath=/dev/null -c commit.gpgsign=false \\
      commit -q --no-verify -m {shlex.quote(SNAPSHOT_MESSAGE)}
  fi
  chown -R {uid}:{uid} .git
  echo ">>> base commit $(r2e_g rev-parse HEAD)"
fi
"""


def _require_layout(workdir: str) -> str:
    return f"""
if [ ! -e {shlex.quote(workdir)}/{RUN_SCRIPT} ] && [ ! -e {TESTS_DIR} ] && [ ! -e {shlex.quote(workdir)}/{TESTS_LINK} ]; then
  echo '>>> not an R2E-Gym image: no {workdir}/{RUN_SCRIPT}, {TESTS_DIR} or {workdir}/{TESTS_LINK}'; exit 5
fi
"""


def agent_layer_script(workdir: str = "/testbed", uid: int = 1000) -> str:
    """The agent's image: hidden tests, run script and expected outputs deleted and checked gone
    from the whole filesystem (see the module docstring)."""
    wd = shlex.quote(workdir)
    return _require_layout(workdir) + f"""
echo '>>> r2e: removing the hidden tests, the run script and the expected outputs'
rm -rf {TESTS_DIR} {wd}/{TESTS_LINK} /root/{TESTS_LINK} /root/{RUN_SCRIPT} /{RUN_SCRIPT}
""" + _common_tail(workdir, uid) + f"""
find / -xdev \\( -name {TESTS_LINK} -o -name expected_test_output.json \\) -prune -print > /tmp/agent-rl-r2e 2>/dev/null || true
while read -r p; do echo ">>> r2e: removing $p"; rm -rf "$p"; done < /tmp/agent-rl-r2e
left=$(find / -xdev \\( -name {TESTS_LINK} -o -name expected_test_output.json \\) -print 2>/dev/null | head -n 1)
rm -f /tmp/agent-rl-r2e
if [ -n "$left" ]; then echo ">>> r2e: hidden material survives: $left"; exit 4; fi
if [ -e {wd}/{RUN_SCRIPT} ] && ! (cd {wd} && r2e_g cat-file -e HEAD:{RUN_SCRIPT} 2>/dev/null); then
  echo '>>> r2e: the run script survives'; exit 4
fi
"""


def grader_layer_script(workdir: str = "/testbed", uid: int = 1000) -> str:
    """The grader's image: tests kept at /r2e_tests, the run script moved to /r2e_grading, both
    root-owned and read-only to everyone else; the repository tree as in the agent's image."""
    wd = shlex.quote(workdir)
    return _require_layout(workdir) + f"""
echo '>>> r2e: keeping the hidden tests and the run script out of the repository, root-owned'
mkdir -p {GRADER_DIR}
for s in {wd}/{RUN_SCRIPT} /root/{RUN_SCRIPT} /{RUN_SCRIPT}; do
  if [ -f "$s" ]; then cp "$s" {GRADER_DIR}/{RUN_SCRIPT}; break; fi
done
if [ ! -d {TESTS_DIR} ]; then
  for d in {wd}/{TESTS_LINK} /root/{TESTS_LINK}; do
    if [ -d "$d" ]; then cp -r "$d" {TESTS_DIR}; break; fi
  done
fi
if [ ! -f {GRADER_DIR}/{RUN_SCRIPT} ] || [ ! -d {TESTS_DIR} ]; then
  echo '>>> not an R2E-Gym image: the run script or the hidden tests are missing'; exit 5
fi
find {TESTS_DIR} -name '*.pyc' -delete
find {TESTS_DIR} -name __pycache__ -prune -exec rm -rf {{}} +
chown -R 0:0 {TESTS_DIR} {GRADER_DIR}
chmod -R a+rX,go-w {TESTS_DIR} {GRADER_DIR}
""" + _common_tail(workdir, uid)


def prepare_command(task: Any) -> str:
    """Before the run, in the grading container (after the patch and the protected-file check):
    byte code the patch may have brought deleted (R2E deletes it too), the tests linked in."""
    wd = shlex.quote(task.workdir)
    return (f"cd {wd} && {{ find . -path ./.venv -prune -o -name '*.pyc' -type f -print0 | xargs -0 -r rm -f; "
            f"find . -path ./.venv -prune -o -name __pycache__ -type d -prune -print0 | xargs -0 -r rm -rf; true; }} "
            f"&& rm -rf {TESTS_LINK} && ln -s {TESTS_DIR} {TESTS_LINK}")


def shell_command(task: Any, log_path: str) -> str:
    """The one command that runs the tests: activation and R2E's run script (cwd the workdir, as
    their runtime runs it) in a subshell whose whole output goes to `log_path`."""
    wd = shlex.quote(task.workdir)
    activate = (getattr(task, "env_activate", "") or "").strip()
    run = f"cd {wd} && bash {GRADER_DIR}/{RUN_SCRIPT}"
    inner = f"{activate} && {run}" if activate else run
    return f"cd {wd} && ( {inner} ) > {shlex.quote(log_path)} 2>&1"
