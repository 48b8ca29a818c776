"""Repository images: one repository, cut at its base commit, layered onto the base image.

The agent must not find the fix anywhere in the image: the clone keeps only `base_commit`'s
ancestry (no other refs, remotes, reflogs or unreachable objects, verified after `gc`). Tags
are content hashes of the base image, the commit and the setup recipe, so an existing tag is a
no-op. Setup commands run as root with the build network (see `sandboxes.images`).
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from sandboxes.images import (
    AGENT_UID,
    KIND_LABEL,
    MANAGED_LABEL,
    REPO_REPOSITORY,
    ImageBuildError,
    Progress,
    _client,
    _content_hash,
    _run,
    ensure_base_image,
    image_exists,
)

if TYPE_CHECKING:
    import docker


_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def _git(repo: Path, *args: str) -> str:
    return _run(["git", "-C", str(repo), *args], f"git {args[0]}").stdout.strip()


def _cut_history_at(repo: Path, commit: str) -> None:
    """Leave `repo` with `commit` checked out on branch `main` and nothing later anywhere.

    The agent must not find the fix in the object store: every other ref, the remotes, the
    reflogs and every unreachable object go, and we verify no commit outside base's ancestry
    survives.
    """
    _git(repo, "checkout", "--quiet", "--force", "-B", "main", commit)
    for remote in _git(repo, "remote").split():
        _git(repo, "remote", "remove", remote)
    for ref in _git(repo, "for-each-ref", "--format=%(refname)").splitlines():
        if ref and ref != "refs/heads/main":
            _git(repo, "update-ref", "-d", ref)
    for leftover in ("FETCH_HEAD", "ORIG_HEAD", "MERGE_HEAD", "packed-refs.lock"):
        (repo / ".git" / leftover).unlink(missing_ok=True)
    _git(repo, "reflog", "expire", "--expire=now", "--all")
    _git(repo, "gc", "--quiet", "--prune=now")
    reachable = set(_git(repo, "rev-list", commit).split())
    stored = _git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objecttype) %(objectname)")
    extra = [line.split()[1] for line in stored.splitlines() if line.startswith("commit ") and line.split()[1] not in reachable]
    if extra:
        raise ImageBuildError(f"history cut failed: {len(extra)} commit(s) after {commit} survive, e.g. {extra[0]}")


def _repo_archive(clone: Path, workdir: str) -> io.BufferedRandom:
    """The clone as a tar rooted at `/`, owned by the agent, in a temp file (repos can be big)."""
    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = AGENT_UID
        info.uname = info.gname = ""
        return info

    handle = tempfile.TemporaryFile()
    with tarfile.open(fileobj=handle, mode="w") as tar:
        tar.add(str(clone), arcname=workdir.strip("/"), filter=owned)
    handle.seek(0)
    return handle  # type: ignore[return-value]


def _setup_script(setup: Sequence[str], workdir: str) -> str:
    # Each command in its own login shell, like separate RUN steps; the first failure stops
    # the build and is named. Setup runs as root, so hand the tree back to the agent after.
    lines = ["set -e"]
    for index, command in enumerate(setup, 1):
        quoted = "'" + command.replace("'", "'\"'\"'") + "'"
        lines.append(f"echo '>>> agent-rl setup step {index}/{len(setup)}'")
        lines.append(f"bash -lc {quoted} || {{ rc=$?; echo \">>> setup step {index} failed (exit $rc)\"; exit $rc; }}")
    lines.append(f"chown -R {AGENT_UID}:{AGENT_UID} {workdir}")
    return "\n".join(lines) + "\n"


def _commit_repo_image(client: "docker.DockerClient", base: str, clone: Path, workdir: str,
                       setup: Sequence[str], tag: str, labels: dict[str, str], setup_timeout: float) -> None:
    """Copy the repo into a container of `base`, run `setup` in it, commit one layer.

    Faster than `docker build` here (one layer instead of one per step, which matters on
    fuse-overlayfs), and the content-hashed tag already gives us the build cache.
    """
    api = client.api
    container = api.create_container(base, command=["bash", "-c", _setup_script(setup, workdir)],
                                     user="root", working_dir="/")["Id"]
    try:
        with _repo_archive(clone, workdir) as archive:
            api.put_archive(container, "/", archive)
        if setup:
            api.start(container)
            try:
                status = api.wait(container, timeout=setup_timeout)["StatusCode"]
            except Exception as exc:  # requests' read timeout: setup ran too long
                raise ImageBuildError(f"setup for {tag} did not finish within {setup_timeout:.0f}s") from exc
            if status != 0:
                logs = api.logs(container).decode("utf-8", errors="replace")[-4000:]
                raise ImageBuildError(f"setup for {tag} failed (exit {status}):\n{logs}")
        label_line = " ".join(f"{key}={json.dumps(value)}" for key, value in sorted(labels.items()))
        repository, _, version = tag.partition(":")
        api.commit(container, repository=repository, tag=version, changes=[
            "USER agent", f"WORKDIR {workdir}", 'CMD ["/bin/bash"]', f"LABEL {label_line}",
        ])
    finally:
        api.remove_container(container, force=True)


def build_repo_image(repo_path: str | os.PathLike[str], base_commit: str, *, setup: Sequence[str] = (),
                     workdir: str = "/testbed", base: str | None = None,
                     client: "docker.DockerClient | None" = None, progress: Progress = print,
                     setup_timeout: float = 1800.0) -> str:
    """Image with the repository at `base_commit` in `workdir`, no later history, no remotes.

    `repo_path` is a local path or a git URL. `setup` commands run as root, in order, each in
    its own login shell in `workdir` (with the build network; see the module docstring).
    Returns the content-hashed tag `agent-rl/repo:<hash>`; an existing tag is a no-op.
    """
    if isinstance(setup, str):
        raise TypeError("setup must be a sequence of shell commands, not a single string")
    if not workdir.startswith("/") or workdir.rstrip("/") == "":
        raise ValueError(f"workdir must be an absolute path below /, got {workdir!r}")
    client = _client(client)
    base = base or ensure_base_image(client, progress=progress)
    base_id = client.images.get(base).id
    source = str(repo_path)
    recipe = json.dumps({"workdir": workdir, "setup": list(setup), "script": _setup_script(setup, workdir)})

    def tag_for(full_commit: str) -> str:
        return f"{REPO_REPOSITORY}:{_content_hash('repo-v2', base_id, full_commit, recipe)}"

    commit = base_commit if _FULL_SHA.match(base_commit) else None
    if commit is None and Path(source).is_dir():
        commit = _git(Path(source), "rev-parse", "--verify", f"{base_commit}^{{commit}}")
    if commit and image_exists(client, tag_for(commit)):
        return tag_for(commit)
    with tempfile.TemporaryDirectory(prefix="agent-rl-repo-") as tmp:
        clone = Path(tmp) / "repo"
        _run(["git", "clone", "--quiet", "--no-local", "--no-hardlinks", source, str(clone)], "git clone")
        commit = _git(clone, "rev-parse", "--verify", f"{base_commit}^{{commit}}")
        tag = tag_for(commit)
        if image_exists(client, tag):
            return tag
        _cut_history_at(clone, commit)
        progress(f"building {tag} ({source} @ {commit[:12]})…")
        labels = {MANAGED_LABEL: "1", KIND_LABEL: "repo", "agent-rl.base-commit": commit}
        _commit_repo_image(client, base, clone, workdir, setup, tag, labels, setup_timeout)
    return tag
