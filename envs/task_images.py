"""Task → Docker image: the task's repository at its base commit, plus its setup commands;
or, for SWE-bench-family datasets, the prebuilt image the row names (checked, pulled, or a
clear error saying how to provide it: `ensure_images`). Native R2E-Gym tasks get two images
from theirs (`envs.swebench.r2e`): `task_image` the agent's, without the hidden tests, and
`grading_image` the grader's, with them.

`sandboxes.repo_images.build_repo_image` does the building and already names images by a
content hash (so a rebuild is a no-op). This module adds what many concurrent episodes
need on top: one build per task at a time across threads *and* processes, and an
in-process memo so the hot path (every `reset`) is a dictionary lookup.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from envs.swebench import r2e
from envs.tasks import Task, TaskError, cache_dir, resolve_repo

log = logging.getLogger(__name__)

MIN_FREE_DISK_ENV = "AGENT_RL_MIN_FREE_DISK_GB"
DEFAULT_MIN_FREE_DISK_GB = 50.0  # SWE-bench instance images are 1-3 GB each, sharing layers
PULL_ENV = "AGENT_RL_IMAGE_PULL"  # "0": never try to pull a missing image


class TaskImageError(RuntimeError):
    """The task's image could not be built; the message names the task."""


class ImageUnavailableError(TaskImageError):
    """A prebuilt image is neither on the engine nor pullable, or the disk is too full to pull."""


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


def _once(key: str, make: Callable[[], str]) -> str:
    """`make()`'s tag for `key`, made once across this process's threads and other processes
    sharing the cache (the file lock), then remembered."""
    cached = _memo.get(key)
    if cached:
        return cached
    with _exclusive(key):
        cached = _memo.get(key)
        if cached:
            return cached
        _memo[key] = tag = make()
        return tag


def task_image(task: Task, *, client: object | None = None) -> str:
    """The image tag to start this task's sandboxes from, building it if needed. A prebuilt
    image named by a SWE-bench-family dataset (see `envs.swebench.datasets`) is checked once per
    process: present, or pulled, or an ImageUnavailableError saying how to provide it; then
    adapted once for our sandboxes (`sandboxes.prebuilt_images`: history cut at the base commit,
    the tree handed to uid 1000), and the adapted tag is what runs. For a native R2E-Gym task
    this is the agent's image (hidden tests, run script and expected outputs removed; never the
    row's image as is), `task.base_commit` becomes the image's HEAD, and the grader's image is
    made too, so that the first grade does not pay for it (see `envs.swebench.r2e`)."""
    if task.image and r2e.is_native_task(task):
        require_prebuilt_images([task], client=client)
        agent = _r2e_image(task, client, grader=False)
        _r2e_image(task, client, grader=True)
        return agent
    if task.image:
        if not task.extra.get("image_source"):
            return task.image  # named by the user: used as is
        require_prebuilt_images([task], client=client)
        return _adapted(task, client)

    def build() -> str:
        from sandboxes.repo_images import build_repo_image  # docker SDK: imported only when building

        try:
            repo_path = resolve_repo(task)
            return build_repo_image(
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

    return _once(image_key(task), build)


# --------------------------------------------------------------------------------------
# Prebuilt images (SWE-bench-family datasets): present, pullable, room on disk
# --------------------------------------------------------------------------------------

_present: set[str] = set()


def _adapted(task: Task, client: object | None, *, variant: str = "", extra_script: str = "") -> str:
    def adapt() -> str:
        from sandboxes.prebuilt_images import adapt_prebuilt_image

        try:
            return adapt_prebuilt_image(task.image, workdir=task.workdir, client=client,  # type: ignore[arg-type]
                                        extra_script=extra_script, variant=variant)
        except Exception as exc:
            raise TaskImageError(f"task {task.instance_id!r}: adapting its image {task.image} for the sandbox "
                                 f"{f'({variant}) ' if variant else ''}failed: {exc}") from exc

    parts = ["adapted", task.image, task.workdir, *([variant, extra_script] if variant else [])]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]
    return _once(key, adapt)


def grading_image(task: Task, *, client: object | None = None) -> str:
    """The image the grader starts from: `task_image(task)`, except for native R2E-Gym tasks,
    whose agent image has no tests: theirs keeps them, root-owned, outside the repository
    (`envs.swebench.r2e.grader_layer_script`)."""
    if task.image and r2e.is_native_task(task):
        require_prebuilt_images([task], client=client)
        return _r2e_image(task, client, grader=True)
    return task_image(task, client=client)


_base_commits: dict[str, str] = {}


def _r2e_image(task: Task, client: object | None, *, grader: bool) -> str:
    """An R2E-Gym image adapted with the agent's or the grader's layer. The agent's sets
    `task.base_commit` to the image's HEAD (the environment commit both layers make): R2E rows
    name their base only as "<fix>^", whose fix commit the history cut removes."""
    if grader:
        return _adapted(task, client, variant=r2e.GRADER_VARIANT, extra_script=r2e.grader_layer_script(task.workdir))
    tag = _adapted(task, client, variant=r2e.AGENT_VARIANT, extra_script=r2e.agent_layer_script(task.workdir))
    base = _base_commits.get(tag)
    if base is None:
        from sandboxes.prebuilt_images import BASE_COMMIT_LABEL

        labels = _docker_client(client).images.get(tag).labels or {}  # type: ignore[attr-defined]
        base = _base_commits.setdefault(tag, labels.get(BASE_COMMIT_LABEL, ""))
    if base and task.base_commit != base:
        log.debug("task %s: base commit %s → %s (the R2E image's HEAD)", task.instance_id, task.base_commit, base)
        task.base_commit = base
    return tag


def require_prebuilt_images(tasks: Iterable[Task], *, client: object | None = None) -> list[str]:
    """Check every prebuilt image these tasks name (SWE-bench-family rows) before a run starts:
    present, or pulled, or one ImageUnavailableError naming every missing image and its task.
    A run over 500 instances then fails in its first second, not at instance 400. Tasks built
    from a repository are not checked here (their images are built on first use). Returns the
    images pulled."""
    wanted = {t.image: t.instance_id for t in tasks if t.image and t.extra.get("image_source")}
    todo = {image: task for image, task in wanted.items() if image not in _present}
    pulled = ensure_images(list(todo), client=client, tasks=todo) if todo else []
    _present.update(todo)
    return pulled


def _docker_client(client: object | None) -> "object":
    if client is not None:
        return client
    from sandboxes.deployment import default_client

    return default_client()


def _free_disk_gb(client: object) -> tuple[float | None, str]:
    """(free GB where the engine keeps its images, that place), None when it cannot be read
    (a remote engine, or a data root this user may not stat)."""
    try:
        root = client.info().get("DockerRootDir") or "/var/lib/docker"  # type: ignore[attr-defined]
    except Exception as exc:  # an engine that does not answer `info` is reported by the pull itself
        return None, f"docker info failed: {exc}"
    try:
        return shutil.disk_usage(root).free / 1e9, root
    except OSError as exc:
        return None, f"{root}: {exc.strerror or exc}"


def how_to_provide(image: str) -> str:
    """What a user can do about a missing image."""
    return (
        f"make {image!r} available to the Docker engine: `docker load -i <archive>` of a saved copy; "
        "or build it (SWE-bench: `python -m swebench.harness.prepare_images`, which names images "
        "as the dataset expects); or pull it from a mirror by setting AGENT_RL_IMAGE_REGISTRY to "
        "the mirror's prefix (e.g. mirror.corp:5000/) before loading the tasks"
    )


def ensure_images(images: Iterable[str], *, client: object | None = None, pull: bool | None = None,
                  min_free_gb: float | None = None, tasks: "dict[str, str] | None" = None) -> list[str]:
    """Make sure every image is on the engine: the missing ones are pulled (unless `pull` is
    False or AGENT_RL_IMAGE_PULL=0), after checking that the engine's disk has at least
    `min_free_gb` free (default AGENT_RL_MIN_FREE_DISK_GB, else 50; 0 turns the check off).
    Returns the images that were pulled. Raises ImageUnavailableError naming every image that
    is still missing (and its task, when `tasks` maps image → instance id) and how to provide it,
    or the free space and the threshold when the disk is too full to pull."""
    import docker

    wanted = list(dict.fromkeys(i for i in images if i))
    if not wanted:
        return []
    engine = _docker_client(client)
    missing = []
    for image in wanted:
        try:
            engine.images.get(image)  # type: ignore[attr-defined]
        except docker.errors.ImageNotFound:
            missing.append(image)
    if not missing:
        return []
    pull = os.environ.get(PULL_ENV, "1") != "0" if pull is None else pull
    named = tasks or {}

    def label(image: str) -> str:
        return f"{image} (task {named[image]!r})" if image in named else image

    if not pull:
        raise ImageUnavailableError(
            f"{len(missing)} image(s) not on the Docker engine (pulling is off): "
            f"{', '.join(label(i) for i in missing[:10])}{' …' if len(missing) > 10 else ''}. "
            + how_to_provide(missing[0])
        )
    threshold = float(os.environ.get(MIN_FREE_DISK_ENV, DEFAULT_MIN_FREE_DISK_GB)) if min_free_gb is None else min_free_gb
    if threshold > 0:
        free, where = _free_disk_gb(engine)
        if free is None:
            log.warning("cannot check free disk before pulling %d image(s): %s", len(missing), where)
        elif free < threshold:
            # Name what is missing here too: on a full disk the user still needs to know
            # which images to provide another way (docker load, a mirror).
            raise ImageUnavailableError(
                f"refusing to pull {len(missing)} image(s): {free:.1f} GB free at {where}, below the "
                f"{threshold:g} GB threshold ({MIN_FREE_DISK_ENV}; pass min_free_gb=0 to skip). Free space "
                "(`docker image prune`), move Docker's data root, or load fewer tasks. Missing: "
                f"{', '.join(label(i) for i in missing[:10])}{' …' if len(missing) > 10 else ''}. "
                + how_to_provide(missing[0])
            )
    pulled, failed = [], []
    for image in missing:
        try:
            engine.images.pull(image)  # type: ignore[attr-defined]
            pulled.append(image)
        except docker.errors.DockerException as exc:
            failed.append((image, str(exc).splitlines()[0][:200]))
    if failed:
        first, why = failed[0]
        raise ImageUnavailableError(
            f"{len(failed)} image(s) not on the Docker engine and not pullable: "
            f"{', '.join(label(i) for i, _ in failed[:10])}{' …' if len(failed) > 10 else ''} "
            f"(pulling {first!r}: {why}). " + how_to_provide(first)
        )
    return pulled
