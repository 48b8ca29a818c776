"""Task → Docker image: the task's repository at its base commit, plus its setup commands.

`sandboxes.repo_images.build_repo_image` does the building and already names images by a
content hash (so a rebuild is a no-op). This module adds what many concurrent episodes
need on top: one build per task at a time across threads *and* processes, and an
in-process memo so the hot path (every `reset`) is a dictionary lookup.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import threading
from contextlib import contextmanager
from typing import Iterator

from envs.tasks import Task, TaskError, cache_dir, resolve_repo


class TaskImageError(RuntimeError):
    """The task's image could not be built; the message names the task."""


_memo: dict[str, str] = {}
_memo_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}


def image_key(task: Task) -> str:
    """What determines the image: repo, commit, setup and workdir (not the hidden tests)."""
    parts = [task.repo, task.base_commit, task.workdir, *task.setup]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


@contextmanager
def _exclusive(key: str) -> Iterator[None]:
    with _memo_lock:
        thread_lock = _key_locks.setdefault(key, threading.Lock())
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with thread_lock, open(lock_dir / f"task-image-{key}.lock", "w") as handle:
        # flock is per open file description, so threads need the lock above as well.
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def task_image(task: Task, *, client: object | None = None) -> str:
    """The image tag to start this task's sandboxes from, building it if needed."""
    if task.image:
        return task.image
    key = image_key(task)
    cached = _memo.get(key)
    if cached:
        return cached
    with _exclusive(key):
        cached = _memo.get(key)
        if cached:
            return cached
        from sandboxes.repo_images import build_repo_image  # docker SDK: imported only when building

        try:
            repo_path = resolve_repo(task)
            tag = build_repo_image(
                str(repo_path),
                task.base_commit,
                setup=tuple(task.setup),
                workdir=task.workdir,
                client=client,
                progress=lambda _msg: None,
            )
        except TaskError:
            raise
        except Exception as exc:  # build failures come in many types; all name the task here
            raise TaskImageError(f"task {task.instance_id!r}: building its image failed: {exc}") from exc
        _memo[key] = tag
        return tag
