"""Images laid out as SWE-bench's own are, built here because no registry can be reached.

The official per-instance images keep the repository at /testbed, owned by root, with its whole
history and HEAD at the base commit, and the environment installed system-wide (conda there;
plain site-packages here). They carry none of our labels, so `envs.task_images.task_image`
adapts them (history cut, /testbed handed to the agent's uid) like a pulled official image.
"""
from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path
from typing import Iterable

# Debian's python3 reads this directory whatever its minor version.
SITE_PACKAGES = "usr/lib/python3/dist-packages"


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if "__pycache__" in Path(info.name).parts:
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def host_package_dir(name: str) -> Path:
    """The directory of an installed pure-Python package on this machine (copied into images as
    a repository's dependency: the containers have no network to install it)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed here (pip install -e '.[dev]' installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def official_style_image(repo: Path, tag: str, *, packages: Iterable[str] = (), importable: bool = False) -> str:
    """Commit `repo` as /testbed (root-owned, history kept) onto our base image, with the named
    host packages in site-packages and, when `importable`, /testbed itself on sys.path (the
    official images install the repository in editable mode). Returns `tag`."""
    import docker

    from sandboxes.images import ensure_base_image

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(str(repo), arcname="testbed", filter=_as_root)
        for name in packages:
            tar.add(str(host_package_dir(name)), arcname=f"{SITE_PACKAGES}/{name}", filter=_as_root)
        if importable:
            line = b"/testbed\n"
            info = _as_root(tarfile.TarInfo(f"{SITE_PACKAGES}/testbed.pth"))
            info.size = len(line)
            tar.addfile(info, io.BytesIO(line))
    client = docker.from_env(timeout=600)
    base = ensure_base_image(client, progress=lambda _msg: None)
    container = client.api.create_container(base, command=["true"], user="root")["Id"]
    try:
        client.api.put_archive(container, "/", archive.getvalue())
        repository, _, version = tag.partition(":")
        client.api.commit(container, repository=repository, tag=version, changes=["USER root", "WORKDIR /testbed"])
    finally:
        client.api.remove_container(container, force=True)
    return tag
