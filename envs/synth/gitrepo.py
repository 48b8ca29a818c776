"""Git plumbing for synthesis: read a tree at a commit, write single-commit repositories.

Every git call runs with a fixed identity, dates and no user/system config, so the same files
always give the same commit hash and cached repositories can be keyed by content.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from envs.tasks import cache_dir, is_git_url


class SynthError(RuntimeError):
    """The repository cannot be used for synthesis; the message is the reason for the report."""


_FIXED_GIT_ENV = {
    "GIT_AUTHOR_NAME": "agent-rl synth",
    "GIT_AUTHOR_EMAIL": "synth@agent-rl.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "agent-rl synth",
    "GIT_COMMITTER_EMAIL": "synth@agent-rl.invalid",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


def run_git(args: list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_FIXED_GIT_ENV)
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode not in ok:
        raise SynthError(f"git {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}")
    return proc.stdout


def checkout_tree(repo: str, commit: str, dest: Path) -> tuple[dict[str, bytes], str]:
    """The tracked files of `repo` at `commit` (path → bytes) and the full commit id."""
    if not is_git_url(repo) and not (Path(repo).expanduser() / ".git").exists():
        raise SynthError(f"{repo!r} is neither a git URL nor a local git repository")
    source = repo if is_git_url(repo) else str(Path(repo).expanduser().resolve())
    clone = dest / "clone"
    run_git(["clone", "--quiet", "--no-hardlinks", source, str(clone)], dest)
    full = run_git(["rev-parse", "--verify", f"{commit}^{{commit}}"], clone).strip()
    files: dict[str, bytes] = {}
    listing = run_git(["ls-tree", "-r", "-z", "--full-tree", full], clone)
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind != "blob" or mode == "120000":
            continue  # submodules and symlinks are not part of a task's source
        files[path] = subprocess.run(["git", "cat-file", "blob", sha], cwd=clone, capture_output=True,
                                     check=True).stdout
    return files, full


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)


def single_commit_repo(dest: Path, files: dict[str, bytes], message: str) -> str:
    """A fresh repository holding `files` in one commit (deterministic hash); returns it."""
    dest.mkdir(parents=True)
    write_files(dest, files)
    run_git(["init", "-q", "-b", "main", "--template="], dest)
    run_git(["add", "-A"], dest)
    run_git(["commit", "-q", "--no-verify", "-m", message], dest)
    return run_git(["rev-parse", "HEAD"], dest).strip()


def _content_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_repo(name: str, files: dict[str, bytes], message: str) -> tuple[Path, str]:
    """A single-commit repo under the cache, built once per content and renamed into place."""
    key = _content_key(name, message, sorted((p, hashlib.sha256(d).hexdigest()) for p, d in files.items()))
    root = cache_dir() / "synth"
    final = root / f"{name}-{key}"
    if (final / ".git").is_dir():
        return final, run_git(["rev-parse", "HEAD"], final).strip()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        commit = single_commit_repo(work / "repo", files, message)
        try:
            os.rename(work / "repo", final)
        except OSError:
            if not (final / ".git").is_dir():
                raise
        return final, commit
    finally:
        shutil.rmtree(work, ignore_errors=True)
