"""Tar archives for the Docker engine's archive API (`put_archive` / `get_archive`).

Files we put are owned by the sandbox user (the engine writes as root otherwise); files we
get are streamed, so a large one never sits in memory twice.
"""
from __future__ import annotations

import functools
import io
import posixpath
import tarfile
import time
from pathlib import Path
from typing import Any

SERVER_DIR = "/opt/agent-rl"
SERVER_PATH = f"{SERVER_DIR}/fastexec_server.py"
SERVER_SOURCE = Path(__file__).with_name("fastexec_server.py")
# The command server and the module it imports; copied into every sandbox side by side.
SERVER_FILES = ("fastexec_server.py", "fastexec_jobs.py")


def numeric_user(user: str) -> tuple[int, int]:
    """(uid, gid) of a `uid[:gid]` user spec; our images' named user `agent` is 1000:1000."""
    uid, _, gid = user.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        return 1000, 1000


def _owned(info: tarfile.TarInfo, uid: int, gid: int) -> tarfile.TarInfo:
    info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
    return info


def files_archive(files: dict[str, tuple[bytes, int]], uid: int, gid: int) -> bytes:
    """A tar of `{name: (data, mode)}`, every entry owned by uid:gid."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = _owned(tarfile.TarInfo(name), uid, gid)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tree_archive(source: Path, remote: str, uid: int, gid: int) -> bytes:
    """A tar of a local file or directory, named for the last part of `remote`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(source), arcname=posixpath.basename(remote.rstrip("/")),
                filter=lambda info: _owned(info, uid, gid))
    return buffer.getvalue()


class ChunkReader(io.RawIOBase):
    """A file-like view of docker-py's chunk iterator, so tarfile can stream it."""

    def __init__(self, chunks: Any):
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size], self._pending = self._pending[:size], self._pending[size:]
        return size


@functools.lru_cache(maxsize=1)
def server_files() -> dict[str, bytes]:
    """The server's files by name, read once (the digest must match what is copied in)."""
    return {name: SERVER_SOURCE.with_name(name).read_bytes() for name in SERVER_FILES}


def server_source() -> bytes:
    """All of the server's code, in one piece: what the image's server digest covers."""
    return b"".join(server_files().values())


def server_archive() -> bytes:
    """The server as a tar, for images without (the current version of) it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("opt", SERVER_DIR.lstrip("/")):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in server_files().items():
            info = tarfile.TarInfo(posixpath.join(SERVER_DIR.lstrip("/"), name))
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
