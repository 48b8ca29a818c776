"""Turn one task spec into a git repo of the buggy state plus its gold and test patches.

Layout of the cache (one directory per task and content fingerprint):

    <cache>/<task id>-<fingerprint>/repo/       git repo, one commit, the buggy state, no remotes
    <cache>/<task id>-<fingerprint>/task.json   base_commit, patch, test_patch

The patches live beside the repo, not in it: a repo handed to an agent must not contain the
clean code anywhere, not even as an unreachable git object. A directory is built under a
private temporary name and renamed into place, so concurrent loaders never see half a repo
and a finished directory is never rebuilt.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from envs.suites.spec import SuiteError, TaskSpec

# Fixed identity and dates make the commit hash a pure function of the content, on any machine.
_FIXED_GIT_ENV = {
    "GIT_AUTHOR_NAME": "agent-rl suites",
    "GIT_AUTHOR_EMAIL": "suites@agent-rl.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "agent-rl suites",
    "GIT_COMMITTER_EMAIL": "suites@agent-rl.invalid",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
    # The user's git config (diff.noprefix, commit.gpgsign, hooks…) must not change the output.
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}

_META_FILE = "task.json"


@dataclass(frozen=True)
class MaterializedTask:
    repo: Path
    base_commit: str
    patch: str
    test_patch: str


def default_cache_dir() -> Path:
    root = os.environ.get("AGENT_RL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "agent-rl")
    return Path(root) / "suites"


def git(args: list[str], cwd: Path, *, ok_codes: tuple[int, ...] = (0,)) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_FIXED_GIT_ENV)
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise SuiteError("git is not installed; the built-in suites need it to materialize task repos") from None
    if proc.returncode not in ok_codes:
        raise SuiteError(f"git {' '.join(args)} failed in {cwd} (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _write_tree(root: Path, tree: Mapping[str, str]) -> None:
    for rel, text in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # newline="" writes the text byte-for-byte; 0644 keeps git's recorded mode stable.
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        path.chmod(0o644)


def _build(work: Path, task: TaskSpec, clean: Mapping[str, str], buggy: Mapping[str, str]) -> MaterializedTask:
    repo = work / "repo"
    repo.mkdir()
    _write_tree(repo, buggy)
    # --template= skips sample hooks: the repo should hold the library and nothing else.
    git(["init", "-q", "-b", "main", "--template="], repo)
    git(["add", "-A"], repo)
    git(["commit", "-q", "--no-verify", "-m", f"{task.id}: base state"], repo)
    base_commit = git(["rev-parse", "HEAD"], repo).strip()

    # Gold patch: put the clean text in the work tree, diff against the commit, put it back.
    # `git diff` hashes work-tree files in memory and writes no objects, so nothing of the
    # clean code is left in the repo afterwards.
    changed = {rel: clean[rel] for rel in sorted({e.file for e in task.bug})}
    _write_tree(repo, changed)
    patch = git(["diff", "--no-color", "--no-ext-diff"], repo)
    _write_tree(repo, {rel: buggy[rel] for rel in changed})

    parts = []
    for hidden in task.hidden_tests:
        _write_tree(repo, {hidden.file: hidden.content})
        # Exit code 1 means "there are differences", which is the point here.
        parts.append(
            git(["diff", "--no-index", "--no-color", "--no-ext-diff", "--", os.devnull, hidden.file], repo, ok_codes=(1,))
        )
        (repo / hidden.file).unlink()
    test_patch = "".join(parts)

    leftovers = git(["status", "--porcelain", "--untracked-files=all"], repo)
    if leftovers.strip() or not patch.strip():
        raise SuiteError(f"task {task.id!r}: materialized repo is not clean or the gold patch is empty: {leftovers!r}")
    return MaterializedTask(repo=repo, base_commit=base_commit, patch=patch, test_patch=test_patch)


def _read_meta(final: Path) -> MaterializedTask:
    meta = json.loads((final / _META_FILE).read_text(encoding="utf-8"))
    return MaterializedTask(final / "repo", meta["base_commit"], meta["patch"], meta["test_patch"])


def materialize(
    task: TaskSpec,
    clean: Mapping[str, str],
    buggy: Mapping[str, str],
    fingerprint: str,
    cache_dir: Path,
) -> MaterializedTask:
    """The task's materialized repo and patches, built once per fingerprint and then reused."""
    final = cache_dir / f"{task.id}-{fingerprint}"
    if (final / _META_FILE).is_file():
        return _read_meta(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{task.id}-", dir=cache_dir))
    try:
        built = _build(work, task, clean, buggy)
        meta = {"base_commit": built.base_commit, "patch": built.patch, "test_patch": built.test_patch}
        (work / _META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        work.chmod(0o755)
        try:
            os.rename(work, final)
        except OSError:
            # Another process finished the same fingerprint first; its copy is identical.
            if not (final / _META_FILE).is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return _read_meta(final)
