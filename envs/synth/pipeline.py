"""Synthesize SWE tasks from any Python repository with passing tests.

    checkout → detect install/test → build image → baseline run → seeded AST mutations
    → keep bugs that break some passing tests and leave the rest passing (re-run for flakes)
    → one single-commit buggy repo per bug, gold = reverse diff, failing test files hidden
    → validate with the real grader (gold resolves, empty does not) → tasks.jsonl + report

Candidate checks reuse one container per worker: the mutated file is written, the suite
runs, and the work tree is restored with git before the next candidate. That is safe
because a candidate only ever changes one tracked file and `git checkout`/`git clean` undo
anything the tests wrote. Candidates are checked in fixed-size rounds and kept in
candidate order, so the result under a seed does not depend on thread timing.

Every suite run uses the grader's command line and outcomes (`envs.pytest_protocol`).
Skipped, xfailed and xpassed tests are neither passes nor failures: they never block the
base commit and never enter FAIL_TO_PASS or PASS_TO_PASS.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from pydantic import Field, field_validator

from envs import pytest_protocol as protocol
from envs.synth.candidates import LAUNCHER_PATH, WORKDIR, CheckedCandidate, check_candidate, run_suite
from envs.synth.detect import DetectError, ProjectSetup, detect_project, missing_dependencies_cmd
from envs.synth.gitrepo import SynthError, cached_repo, checkout_tree, run_git, write_files
from envs.synth.mutations import STRATEGIES, Mutation, check_strategies, enumerate_mutations, select_candidates
from envs.tasks import Task
from sandboxes.docker import DockerSandboxConfig
from strictconfig import StrictModel

log = logging.getLogger(__name__)


class SynthConfig(StrictModel):
    """One `agent-rl synth` run: which repository, how many tasks, how they are checked."""

    config_where: ClassVar[str] = "synth"

    repo: str
    """Local git repository or git URL."""
    out: str
    """tasks.jsonl to write."""
    commit: str = "HEAD"
    max_tasks: int = Field(20, ge=1)
    max_candidates: int | None = Field(None, ge=1)
    """Mutations to try; None: 4 × max_tasks."""
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES))
    seed: int = 0
    install_cmd: str | None = None
    """Overrides the detected install command."""
    test_cmd: str | None = None
    """Overrides the detected test command."""
    flaky_reruns: int = Field(1, ge=0)
    workers: int = Field(2, ge=1)
    validate_tasks: bool = Field(True, alias="validate")
    """Grade each task's gold and empty patch before writing it."""
    test_timeout_s: float = Field(120.0, gt=0)
    report: str | None = None
    """None: synth_report.json beside `out`."""
    sandbox: DockerSandboxConfig = Field(default_factory=DockerSandboxConfig)
    """The container the tests run in; its workdir is the synth image's unless set."""

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, value: list[str]) -> list[str]:
        return check_strategies(value)

    @property
    def report_path(self) -> str:
        return self.report or os.path.join(os.path.dirname(os.path.abspath(self.out)), "synth_report.json")


# --------------------------------------------------------------------------- task writing


def _test_source(test_file_text: str, node_id: str, max_lines: int = 30) -> str | None:
    names = node_id.split("::")[1:]
    if not names:
        return None
    try:
        tree: ast.AST = ast.parse(test_file_text)
    except SyntaxError:
        return None
    node: ast.AST | None = tree
    for name in names:
        name = name.split("[", 1)[0]
        node = next((c for c in ast.iter_child_nodes(node)
                     if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and c.name == name), None)
        if node is None:
            return None
    segment = ast.get_source_segment(test_file_text, node)
    if not segment:
        return None
    lines = segment.splitlines()
    return "\n".join(lines[:max_lines] + (["    ..."] if len(lines) > max_lines else []))


def problem_statement(repo_name: str, f2p: Sequence[str], messages: dict[str, str],
                      hidden_texts: dict[str, str], max_listed: int = 5) -> str:
    """A user-style bug report from the failing checks: what fails and how, never the fix."""
    listed = list(f2p)[:max_listed]
    lines = [
        f"Some behaviour of {repo_name} is broken: checks that used to pass now fail.",
        "",
        "Failing checks:",
    ]
    for test in listed:
        message = " ".join((messages.get(test) or "fails").split())[:300]
        lines.append(f"- `{test}`: {message}")
    if len(f2p) > len(listed):
        lines.append(f"- … and {len(f2p) - len(listed)} more")
    first = listed[0]
    source = _test_source(hidden_texts.get(first.split("::")[0], ""), first)
    if source:
        lines += ["", "Reproducer (the first failing check):", "", "```python", source, "```"]
    lines += ["", "Expected: these checks pass. Actual: they fail as shown above. "
              "Please find the cause in the library code and fix it."]
    return "\n".join(lines) + "\n"


def _diff_in_scratch(repo: Path, changes: dict[str, bytes], new_files: bool) -> str:
    """`git diff` of `changes` against the repo's commit, computed in a throwaway copy."""
    with tempfile.TemporaryDirectory(prefix="agent-rl-synth-diff-") as tmp:
        scratch = Path(tmp) / "repo"
        shutil.copytree(repo, scratch)
        write_files(scratch, changes)
        if new_files:
            run_git(["add", "-N", "--", *changes], scratch)
        return run_git(["diff", "--no-color", "--no-ext-diff", "--binary"], scratch)


def write_task(checked: CheckedCandidate, repo_name: str, clean: dict[str, bytes], setup: ProjectSetup,
               seed: int) -> Task:
    """The task of a kept mutation: a single-commit buggy repo without the failing test files,
    gold patch = the reverse of the mutation, test patch = those files back."""
    m = checked.mutation
    hidden = sorted({t.split("::")[0] for t in checked.fail_to_pass})
    buggy = {p: d for p, d in clean.items() if p not in hidden}
    buggy[m.path] = m.apply(clean[m.path].decode("utf-8")).encode("utf-8")
    instance_id = f"{repo_name}.synth-{m.id}"
    repo, commit = cached_repo(instance_id, buggy, f"{instance_id}: base state")
    patch = _diff_in_scratch(repo, {m.path: clean[m.path]}, new_files=False)
    test_patch = _diff_in_scratch(repo, {p: clean[p] for p in hidden}, new_files=True)
    texts = {p: clean[p].decode("utf-8", errors="replace") for p in hidden}
    return Task(
        instance_id=instance_id,
        repo=str(repo),
        base_commit=commit,
        problem_statement=problem_statement(repo_name, checked.fail_to_pass, checked.messages, texts),
        patch=patch,
        test_patch=test_patch,
        FAIL_TO_PASS=list(checked.fail_to_pass),
        PASS_TO_PASS=list(checked.pass_to_pass),
        version="synth",
        setup=list(setup.install_cmds),
        test_cmd=setup.test_cmd,
        test_files=hidden,
        suite=f"synth:{repo_name}",
        extra={"synth": {"strategy": m.strategy, "file": m.path, "function": m.function, "line": m.line,
                         "mutation_id": m.id, "seed": seed}},
    )


# --------------------------------------------------------------------------- the pipeline


@dataclass
class SynthResult:
    """The tasks written and the run's report (also written beside them)."""

    tasks: list[Task]
    report: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Did the run write at least one task?"""
        return self.report.get("status") == "ok"


Progress = Callable[[str], None]


def _repo_name(repo: str) -> str:
    base = repo.rstrip("/").rsplit("/", 1)[-1]
    base = base[:-4] if base.endswith(".git") else base
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in base).strip("-")
    return cleaned or "repo"


def synthesize(config: SynthConfig, *, progress: Progress = lambda msg: None) -> SynthResult:
    """Run the pipeline; never raises for a bad repository — the report says why instead."""
    report: dict[str, Any] = {
        "repo": config.repo, "commit": config.commit, "seed": config.seed, "strategies": config.strategies,
        "max_tasks": config.max_tasks, "status": "failed", "reason": "", "tasks": [], "timings": {},
    }
    started = time.monotonic()
    tasks: list[Task] = []
    try:
        tasks = _synthesize(config, report, progress)
        report["status"] = "ok" if tasks else "failed"
        if not tasks and not report["reason"]:
            report["reason"] = "no candidate bug survived the checks (see per_strategy and rejections)"
    except (SynthError, DetectError) as exc:
        report["reason"] = str(exc)
    report["timings"]["total_s"] = round(time.monotonic() - started, 2)
    report["tasks"] = [t.instance_id for t in tasks]
    _write_outputs(config, tasks, report)
    return SynthResult(tasks, report)


def _timed(report: dict[str, Any], name: str, since: float) -> float:
    now = time.monotonic()
    report["timings"][f"{name}_s"] = round(now - since, 2)
    return now


def _synthesize(config: SynthConfig, report: dict[str, Any], progress: Progress) -> list[Task]:
    from sandboxes.docker import DockerSandbox
    from sandboxes.repo_images import build_repo_image

    t = time.monotonic()
    name = _repo_name(config.repo)
    with tempfile.TemporaryDirectory(prefix="agent-rl-synth-") as tmp:
        clean, full_commit = checkout_tree(config.repo, config.commit, Path(tmp))
        write_files(Path(tmp) / "tree", clean)
        setup = detect_project(Path(tmp) / "tree", install_cmd=config.install_cmd, test_cmd=config.test_cmd)
    report["commit"] = full_commit
    report["setup"] = {"install_cmds": setup.install_cmds, "test_cmd": setup.test_cmd,
                       "dependencies": setup.dependencies, "notes": setup.notes}
    t = _timed(report, "checkout", t)

    progress(f"building the image of {name} @ {full_commit[:12]}")
    clean_repo, clean_commit = cached_repo(f"{name}-clean", clean, f"{name} @ {full_commit}")
    try:
        image = build_repo_image(str(clean_repo), clean_commit, setup=setup.install_cmds, progress=lambda _m: None)
    except Exception as exc:  # the build runs the install commands: their failure is a broken install
        raise SynthError(f"broken install: building the image failed: {exc}") from exc
    t = _timed(report, "image", t)

    sandbox_config = config.sandbox.for_task_workdir(WORKDIR)
    progress("running the test suite on the base commit")
    with DockerSandbox(image, sandbox_config) as box:
        protocol.install_launcher(box, LAUNCHER_PATH)
        if setup.dependencies:
            missing = box.exec(missing_dependencies_cmd(setup.dependencies), timeout=60).output.split()
            if missing:
                raise SynthError(
                    f"broken install: the install needs the network: dependencies {missing} are not in the base "
                    "image and containers have no network (provide them offline with --install-cmd)"
                )
        base = run_suite(box, setup.test_cmd, config.test_timeout_s)
    if base.timed_out:
        raise SynthError(f"the test suite timed out after {config.test_timeout_s:g}s on the base commit")
    if base.collection_errors:
        raise SynthError(f"tests don't pass cleanly: collection errors in {base.collection_errors}: "
                         f"{base.output[-800:]}")
    if not base.outcomes:
        raise SynthError(f"no tests: pytest collected no tests on the base commit: {base.output[-400:]}")
    failing = sorted(tid for tid, outcome in base.outcomes.items() if outcome.is_failure)
    if failing:
        details = "; ".join(f"{t_}: {base.messages.get(t_, '')[:200]}" for t_ in failing[:5])
        raise SynthError(f"tests don't pass cleanly on the base commit: {len(failing)} of {len(base.outcomes)} "
                         f"fail ({details})")
    # Skipped and xfail-marked tests are left out: they can be neither FAIL_TO_PASS nor PASS_TO_PASS.
    baseline = {tid for tid in base.outcomes if base.passed(tid)}
    if not baseline:
        raise SynthError(f"no tests: none passes on the base commit ({protocol.describe(base.outcomes.values())})")
    report["baseline"] = {"tests": len(baseline), "outcomes": protocol.describe(base.outcomes.values())}
    t = _timed(report, "baseline", t)

    all_mutations: list[Mutation] = []
    for path in setup.source_files:
        try:
            text = clean[path].decode("utf-8")
        except UnicodeDecodeError:
            continue
        all_mutations += enumerate_mutations(path, text, config.strategies)
    limit = config.max_candidates or 4 * config.max_tasks
    candidates = select_candidates(all_mutations, config.seed, limit)
    per_strategy = {s: Counter() for s in config.strategies}
    for m in all_mutations:
        per_strategy[m.strategy]["enumerated"] += 1
    for m in candidates:
        per_strategy[m.strategy]["selected"] += 1
    progress(f"{len(all_mutations)} possible mutations; checking up to {len(candidates)}")

    kept = _check_all(candidates, clean, baseline, config, setup, image, sandbox_config, per_strategy, report, progress)
    t = _timed(report, "candidates", t)

    tasks = [write_task(c, name, clean, setup, config.seed) for c in kept]
    t = _timed(report, "write", t)
    if config.validate_tasks and tasks:
        progress(f"validating {len(tasks)} tasks with the grader (gold resolves, empty does not)")
        tasks = _validate(tasks, config, per_strategy, report)
        _timed(report, "validate", t)
    tasks = tasks[: config.max_tasks]
    for task in tasks:
        per_strategy[task.extra["synth"]["strategy"]]["written"] += 1
    report["per_strategy"] = {s: dict(c) for s, c in per_strategy.items()}
    return tasks


def _check_all(candidates: list[Mutation], clean: dict[str, bytes], baseline: set[str], config: SynthConfig,
               setup: ProjectSetup, image: str, sandbox_config: Any, per_strategy: dict[str, Counter],
               report: dict[str, Any], progress: Progress) -> list[CheckedCandidate]:
    from sandboxes.docker import DockerSandbox

    rejections: Counter = Counter()
    kept: list[CheckedCandidate] = []
    boxes = [DockerSandbox(image, sandbox_config) for _ in range(config.workers)]
    try:
        for box in boxes:
            protocol.install_launcher(box, LAUNCHER_PATH)
        with ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="synth") as pool:
            # Rounds of one candidate per worker; stopping between rounds keeps the result seed-determined.
            for start in range(0, len(candidates), config.workers):
                batch = candidates[start:start + config.workers]
                results = list(pool.map(
                    lambda pair: check_candidate(pair[0], pair[1], clean[pair[1].path].decode("utf-8"), baseline,
                                                 config, setup.test_cmd),
                    zip(boxes, batch)))
                for checked in results:
                    per_strategy[checked.mutation.strategy]["checked"] += 1
                    if checked.outcome == "kept":
                        kept.append(checked)
                    else:
                        rejections[checked.outcome] += 1
                progress(f"checked {start + len(batch)}/{len(candidates)} candidates, {len(kept)} kept")
                if len(kept) >= _with_spare(config):
                    break
    finally:
        for box in boxes:
            box.close()
    # A round can overshoot: bugs past the cut are good but not needed.
    rejections["not_needed"] += max(0, len(kept) - _with_spare(config))
    report["rejections"] = {k: v for k, v in sorted(rejections.items()) if v}
    kept = kept[: _with_spare(config)]
    for checked in kept:
        per_strategy[checked.mutation.strategy]["kept"] += 1
    return kept


def _with_spare(config: SynthConfig) -> int:
    # A few spare bugs, so that one failing validation does not leave us short of max_tasks.
    return config.max_tasks + (max(1, config.max_tasks // 10) if config.validate_tasks else 0)


def _validate(tasks: list[Task], config: SynthConfig, per_strategy: dict[str, Counter],
              report: dict[str, Any]) -> list[Task]:
    """The same check as `agent-rl tasks validate`: gold resolves, empty does not, no errors."""
    from envs.validate import validate_tasks

    results = validate_tasks(tasks, runs=1, workers=config.workers)
    valid: list[Task] = []
    invalid: dict[str, list[str]] = {}
    for task, result in zip(tasks, results):
        if result.valid:
            per_strategy[task.extra["synth"]["strategy"]]["validated"] += 1
            valid.append(task)
        else:
            invalid[task.instance_id] = result.problems + result.flaky_tests
    report["invalid"] = invalid
    return valid


def _write_outputs(config: SynthConfig, tasks: list[Task], report: dict[str, Any]) -> None:
    out_dir = os.path.dirname(os.path.abspath(config.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(config.out, "w", encoding="utf-8") as fh:
        for task in tasks:
            fh.write(json.dumps(task.to_dict(), sort_keys=True) + "\n")
    os.makedirs(os.path.dirname(os.path.abspath(config.report_path)), exist_ok=True)
    with open(config.report_path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, sort_keys=True, default=str)
