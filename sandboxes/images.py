"""Sandbox images built without any registry.

Nothing can be pulled here, so the base image starts from a Debian rootfs made by
`debootstrap` against the host's configured apt mirror and imported with `docker import`.
On top of it, a small Dockerfile adds the non-root `agent` user, `/testbed`, a git identity
and the in-container fast-exec server. Repository images, one repository cut at its base
commit on top of the base image, are built by `sandboxes.repo_images`.

Every tag is a content hash of its inputs, so asking for an image that exists is a no-op
and changing any input (package list, mirror, Dockerfile text, server source, commit,
setup commands) yields a new tag. Every image carries the label `agent-rl.managed=1`,
which is what `prune_images` keys on.

Network during `docker build` (checked by hand on this engine, 20.10, default bridge):
a `RUN pip download six` step reaches pypi.org, but TLS fails with "self-signed certificate
in certificate chain" because this network intercepts TLS with a CA only the host trusts.
So in practice PyPI is NOT available during builds here, and nothing depends on it: the
base image is complete without network, and repository `setup` commands that need the
network fail with their own error, reported by `build_repo_image`.

Run `python -m sandboxes.images build` to build the base image.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from sandboxes import archive
from sandboxes.archive import SERVER_DIR, SERVER_FILES

if TYPE_CHECKING:
    import docker

MANAGED_LABEL = "agent-rl.managed"
KIND_LABEL = "agent-rl.kind"
BASE_REPOSITORY = "agent-rl/base"
ROOTFS_REPOSITORY = "agent-rl/base-rootfs"
REPO_REPOSITORY = "agent-rl/repo"
BASE_ALIAS = f"{BASE_REPOSITORY}:latest"

DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# What agents and graders need inside the box: python with pytest, git, patch, ps/kill.
# `python-is-python3` because models type `python` far more often than `python3`.
BASE_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-pytest",
    "python3-setuptools",
    "python3-pip",
    "python3-venv",
    "python-is-python3",
    "git",
    "ca-certificates",
    "procps",
    "patch",
    "less",
)
MIN_FREE_BYTES = 3 * 1024**3
AGENT_UID = 1000
SERVER_DIGEST_LABEL = "agent-rl.fastexec-sha256"

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """Building an image failed; the message says which step and why."""


# --------------------------------------------------------------------------- helpers


def _client(client: "docker.DockerClient | None") -> "docker.DockerClient":
    if client is not None:
        return client
    import docker

    # Builds stream nothing while a slow setup step runs, so allow long reads.
    return docker.from_env(timeout=1800)


def _content_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def image_exists(client: "docker.DockerClient", tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Serialize image builds between processes on this host (many test sessions start at once)."""
    path = Path(tempfile.gettempdir()) / "agent-rl-image-build.lock"
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_free_disk(path: str, needed: int = MIN_FREE_BYTES) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise ImageBuildError(
            f"only {free / 1024**3:.1f} GiB free under {path}; building the base image needs about "
            f"{needed / 1024**3:.0f} GiB (free space or run `agent-rl images prune --all`)"
        )


def _run(cmd: Sequence[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


# --------------------------------------------------------------------------- mirror


def _mirror_from_deb822(text: str, suite: str) -> str | None:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if suite in fields.get("suites", "").split() and fields.get("uris"):
            return fields["uris"].split()[0]
    return None


def _mirror_from_sources_list(text: str, suite: str) -> str | None:
    for line in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0])  # drop comments and [options]
        words = line.split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            return words[1]
    return None


def debian_mirror(suite: str = DEFAULT_SUITE) -> str:
    """The Debian mirror apt on this host uses for `suite` (env AGENT_RL_DEBIAN_MIRROR wins)."""
    override = os.environ.get("AGENT_RL_DEBIAN_MIRROR")
    if override:
        return override
    candidates = [Path("/etc/apt/sources.list.d/debian.sources")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        if path.is_file():
            found = _mirror_from_deb822(path.read_text(errors="replace"), suite)
            if found:
                return found
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.is_file():
            found = _mirror_from_sources_list(path.read_text(errors="replace"), suite)
            if found:
                return found
    return DEFAULT_MIRROR


# --------------------------------------------------------------------------- base image


def server_digest(source: bytes) -> str:
    """Names the server version an image carries (label `agent-rl.fastexec-sha256`), so a
    sandbox can tell whether the image's copy matches the client it talks to."""
    return hashlib.sha256(source).hexdigest()[:16]


def _base_dockerfile(rootfs_tag: str, server_source: bytes) -> str:
    # The server copy is the last step so that editing it reuses every earlier layer.
    return f"""\
FROM {rootfs_tag}
RUN groupadd --gid {AGENT_UID} agent \\
 && useradd --uid {AGENT_UID} --gid {AGENT_UID} --create-home --shell /bin/bash agent \\
 && mkdir -p /testbed /opt/agent-rl \\
 && chown agent:agent /testbed \\
 && git config --system safe.directory '*' \\
 && git config --system user.name 'agent-rl' \\
 && git config --system user.email 'agent@agent-rl.invalid' \\
 && git config --system init.defaultBranch main \\
 && git config --system advice.detachedHead false
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8 LC_ALL=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
WORKDIR /testbed
COPY {" ".join(SERVER_FILES)} {SERVER_DIR}/
RUN chmod 0755 {" ".join(f"{SERVER_DIR}/{name}" for name in SERVER_FILES)}
LABEL {SERVER_DIGEST_LABEL}={server_digest(server_source)}
USER agent
"""


def _rootfs_tag(suite: str, mirror: str, packages: Sequence[str]) -> str:
    return f"{ROOTFS_REPOSITORY}:{_content_hash('rootfs-v1', suite, mirror, *sorted(packages))}"


def _base_tag(rootfs_tag: str, dockerfile: str, server_source: bytes) -> str:
    digest = _content_hash("base-v1", rootfs_tag, dockerfile, hashlib.sha256(server_source).hexdigest())
    return f"{BASE_REPOSITORY}:{digest}"


def base_image_tag(suite: str = DEFAULT_SUITE, mirror: str | None = None,
                   packages: Sequence[str] = BASE_PACKAGES) -> str:
    """The content-hashed tag `ensure_base_image` would produce for these inputs (no Docker call)."""
    rootfs_tag = _rootfs_tag(suite, mirror or debian_mirror(suite), packages)
    server_source = archive.server_source()
    return _base_tag(rootfs_tag, _base_dockerfile(rootfs_tag, server_source), server_source)


def _debootstrap_rootfs(workdir: Path, suite: str, mirror: str, packages: Sequence[str],
                        progress: Progress) -> Path:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap needs root to build the base rootfs; run as root")
    rootfs = workdir / "rootfs"
    progress(f"debootstrap {suite} from {mirror} (a few minutes)…")
    _run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(rootfs), mirror],
        "debootstrap",
    )
    # Package caches are dead weight in every sandbox.
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / cache).glob("*"):
            if entry.is_file():
                entry.unlink()
    return rootfs


def _import_rootfs(client: "docker.DockerClient", rootfs: Path, tag: str, progress: Progress) -> None:
    archive = rootfs.parent / "rootfs.tar"
    progress(f"packing rootfs and importing as {tag}…")
    _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(archive), "."], "tar rootfs")
    repository, _, version = tag.partition(":")
    client.api.import_image_from_file(
        str(archive),
        repository=repository,
        tag=version,
        changes=[f"LABEL {MANAGED_LABEL}=1 {KIND_LABEL}=rootfs", "CMD [\"/bin/bash\"]"],
    )
    if not image_exists(client, tag):
        raise ImageBuildError(f"docker import did not produce {tag}")


def _tar_context(files: dict[str, bytes], dirs: dict[str, Path] | None = None) -> io.BufferedRandom:
    """A build context as a temp file (repos can be large, so not in memory)."""
    handle = tempfile.TemporaryFile()
    with tarfile.open(fileobj=handle, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, path in (dirs or {}).items():
            tar.add(str(path), arcname=name)
    handle.seek(0)
    return handle  # type: ignore[return-value]


def _docker_build(client: "docker.DockerClient", context: io.BufferedRandom, tag: str,
                  labels: dict[str, str], progress: Progress) -> None:
    log_tail: list[str] = []
    stream = client.api.build(
        fileobj=context, custom_context=True, tag=tag, labels=labels, rm=True, forcerm=True, decode=True
    )
    for chunk in stream:
        if "stream" in chunk:
            line = chunk["stream"].rstrip()
            if line:
                log_tail = (log_tail + [line])[-60:]
                if line.startswith("Step "):
                    progress(line)
        if "error" in chunk:
            detail = "\n".join(log_tail[-40:])
            raise ImageBuildError(f"docker build of {tag} failed: {chunk['error'].strip()}\n{detail}")
    if not image_exists(client, tag):
        raise ImageBuildError(f"docker build reported success but {tag} is missing")


def _alias(client: "docker.DockerClient", tag: str, alias: str) -> None:
    image = client.images.get(tag)
    if alias not in image.tags:
        repository, _, version = alias.partition(":")
        image.tag(repository, version)


def ensure_base_image(client: "docker.DockerClient | None" = None, *, progress: Progress = print,
                      suite: str = DEFAULT_SUITE, mirror: str | None = None,
                      packages: Sequence[str] = BASE_PACKAGES) -> str:
    """Build the base sandbox image if it is missing; return its content-hashed tag.

    Also points `agent-rl/base:latest` at it. A second call with the same inputs is a no-op.
    """
    client = _client(client)
    mirror = mirror or debian_mirror(suite)
    rootfs_tag = _rootfs_tag(suite, mirror, packages)
    server_source = archive.server_source()  # read once: the tag must match what is copied in
    dockerfile = _base_dockerfile(rootfs_tag, server_source)
    tag = _base_tag(rootfs_tag, dockerfile, server_source)
    if image_exists(client, tag):
        _alias(client, tag, BASE_ALIAS)
        return tag
    with _build_lock():
        if image_exists(client, tag):  # another process built it while we waited
            _alias(client, tag, BASE_ALIAS)
            return tag
        started = time.monotonic()
        if not image_exists(client, rootfs_tag):
            _check_free_disk(tempfile.gettempdir())
            docker_root = client.info().get("DockerRootDir", "")
            if docker_root and os.path.isdir(docker_root):  # not when the engine is remote
                _check_free_disk(docker_root)
            with tempfile.TemporaryDirectory(prefix="agent-rl-rootfs-") as tmp:
                rootfs = _debootstrap_rootfs(Path(tmp), suite, mirror, packages, progress)
                _import_rootfs(client, rootfs, rootfs_tag, progress)
        progress(f"building {tag} on {rootfs_tag}…")
        context = _tar_context({"Dockerfile": dockerfile.encode(), **archive.server_files()})
        with context:
            _docker_build(client, context, tag, {MANAGED_LABEL: "1", KIND_LABEL: "base"}, progress)
        _alias(client, tag, BASE_ALIAS)
        progress(f"built {tag} in {time.monotonic() - started:.0f}s")
    return tag


# --------------------------------------------------------------------------- listing, pruning


def list_images(client: "docker.DockerClient | None" = None) -> list[dict[str, object]]:
    """Managed images: id, tags, kind, size in bytes, creation time."""
    client = _client(client)
    rows = []
    for image in client.images.list(filters={"label": f"{MANAGED_LABEL}=1"}):
        attrs = image.attrs
        rows.append({
            "id": image.short_id,
            "tags": list(image.tags),
            "kind": (image.labels or {}).get(KIND_LABEL, "?"),
            "size": attrs.get("Size", 0),
            "created": attrs.get("Created", ""),
        })
    return rows


def prune_images(client: "docker.DockerClient | None" = None, *, all: bool = False) -> list[str]:  # noqa: A002
    """Remove managed images only. By default just dangling ones; `all=True` removes every
    managed image no container uses. Returns the removed image ids."""
    client = _client(client)
    result = client.images.prune(filters={"dangling": not all, "label": f"{MANAGED_LABEL}=1"})
    return [entry.get("Deleted") or entry.get("Untagged", "") for entry in (result.get("ImagesDeleted") or [])]


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.images", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("build", help="build the base image (no-op when it exists)")
    sub.add_parser("list", help="list managed images")
    prune = sub.add_parser("prune", help="remove managed dangling images")
    prune.add_argument("--all", action="store_true", help="remove every managed image no container uses")
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            print(ensure_base_image())
        elif args.action == "list":
            for row in list_images():
                print(f"{row['id']:<20} {row['kind']:<7} {int(row['size']) / 1e6:>8.0f} MB  {' '.join(row['tags'])}")
        else:
            removed = prune_images(all=args.all)
            print(f"removed {len(removed)} image layer(s)")
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
