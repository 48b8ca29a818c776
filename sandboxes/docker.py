"""Hardened Docker containers as sandboxes.

Defaults: no network, user 1000:1000, every capability dropped, no-new-privileges, an init
process, and pids/memory/CPU limits. Relaxing one takes an explicit config key; if the engine
refuses (or warns that it discarded) an option we raise `HardeningUnsupported` naming it.

Commands normally go through the fast-exec server (`fastexec_server.py`), the container's
main process, over the container's attach socket: no `docker exec` per command, and it works
the same when agent-rl itself runs in a container against the host's Docker socket.
`fast_exec=False` runs that server once per command via `exec_run` instead: slower, same
semantics (persistent cwd/env, process-group kill on timeout).
"""
from __future__ import annotations

import base64
import functools
import io
import json
import logging
import os
import posixpath
import re
import socket
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from pydantic import ConfigDict, Field, field_validator, model_serializer, model_validator

from sandboxes.base import (
    DEFAULT_OUTPUT_CAP,
    HardeningUnsupported,
    SandboxDied,
    SandboxError,
)
from sandboxes.fastexec import (
    AttachSocketTransport,
    ChannelClosed,
    ChannelTimeout,
    FileTooLarge,
    READ_LIMIT_BYTES,
    ServerChannel,
    ServerSandbox,
    check_reply,
)
from strictconfig import StrictModel

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

MANAGED_LABEL = "agent-rl.managed"
OWNER_PID_LABEL = "agent-rl.owner-pid"
OWNER_HOST_LABEL = "agent-rl.owner-host"
CREATED_LABEL = "agent-rl.created"
KIND_LABEL = "agent-rl.kind"
SERVER_PATH = "/opt/agent-rl/fastexec_server.py"
SERVER_SOURCE = Path(__file__).with_name("fastexec_server.py")
# Session state of the exec_run fallback (one server process per command) lives here.
FALLBACK_STATE_DIR = "/tmp/.agent-rl-shell"
_MEMORY = re.compile(r"^\d+[bkmg]?$", re.IGNORECASE)


class DockerSandboxConfig(StrictModel):
    """How a sandbox container is started. Every hardening option is its own key.

    The defaults are the hardened ones; turning one off is logged as a relaxation.
    """

    model_config = ConfigDict(frozen=True)
    config_where: ClassVar[str] = "sandbox"

    network: str = "none"
    """Docker network mode; anything but "none" gives the agent a network, so say it explicitly."""
    user: str = "1000:1000"
    """uid:gid the commands run as (never root unless relaxed on purpose)."""
    cap_drop: tuple[str, ...] = Field(("ALL",), strict=False)
    """Linux capabilities dropped from the container."""
    cap_add: tuple[str, ...] = Field((), strict=False)
    """Capabilities added back after the drop."""
    no_new_privileges: bool = True
    """Forbid setuid binaries from gaining privileges."""
    init: bool = True
    """Run an init process that reaps zombies."""
    pids_limit: int = Field(256, gt=0)
    """Most processes the container may hold (fork-bomb guard)."""
    mem_limit: str = "2g"
    """Memory limit in Docker's syntax: '512m', '2g'."""
    cpus: float = Field(1.0, gt=0)
    """CPU quota in cores."""
    output_cap: int = DEFAULT_OUTPUT_CAP
    """Characters of command output handed back; past it the head and tail are kept."""
    default_timeout: float = Field(120.0, gt=0)
    """Seconds a command may run when the caller gives no timeout."""
    start_timeout: float = Field(60.0, gt=0)
    """Seconds to wait for the container's command server to come up."""
    workdir: str = "/testbed"
    """Absolute working directory. Envs use the task's workdir unless this key is set."""
    fast_exec: bool = True
    """Commands over the attach socket (fast) instead of one `docker exec` each."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra container labels."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables of every command (values are stringified)."""

    @field_validator("env", mode="before")
    @classmethod
    def _stringify_env(cls, value: Any) -> Any:
        # YAML gives numbers for `A: 1`; the environment only holds strings.
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else value

    @field_validator("mem_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY.match(value):
            raise ValueError(f"must look like '512m' or '2g', got {value!r}")
        return value

    @field_validator("workdir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be absolute, got {value!r}")
        return value

    @model_validator(mode="after")
    def _log_relaxations(self) -> "DockerSandboxConfig":
        relaxed = self.relaxations()
        if relaxed:
            log.warning("sandbox hardening relaxed by config: %s", "; ".join(relaxed))
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # An unset workdir follows each task's, so a dumped-and-reloaded config must not pin it.
        data = handler(self)
        if "workdir" not in self.model_fields_set:
            data.pop("workdir", None)
        return data

    def relaxations(self) -> list[str]:
        """The hardening defaults this config turns off, in words (for logs and reports)."""
        relaxed = []
        if self.network != "none":
            relaxed.append(f"network={self.network!r} (the agent can reach the network)")
        if self.user.split(":")[0] in ("0", "root", ""):
            relaxed.append("runs as root")
        if "ALL" not in {cap.upper() for cap in self.cap_drop}:
            relaxed.append(f"keeps default capabilities except {list(self.cap_drop)}")
        if self.cap_add:
            relaxed.append(f"adds capabilities {list(self.cap_add)}")
        if not self.no_new_privileges:
            relaxed.append("setuid binaries can gain privileges")
        if not self.init:
            relaxed.append("no init process (zombies are not reaped)")
        return relaxed

    def for_task_workdir(self, workdir: str) -> "DockerSandboxConfig":
        """This config with `workdir` unless the config pins its own."""
        return self if "workdir" in self.model_fields_set else self.model_copy(update={"workdir": workdir})


def owner_labels() -> dict[str, str]:
    """Labels that let the reaper find containers whose owning process died."""
    return {
        MANAGED_LABEL: "1",
        OWNER_PID_LABEL: str(os.getpid()),
        OWNER_HOST_LABEL: socket.gethostname(),
        CREATED_LABEL: str(int(time.time())),
    }


# Phrases by which the engine refuses (or warns that it discarded) an option, and the
# config key to name. Specific phrases: OCI errors say "container init" about anything.
_HARDENING_WORDS = (
    ("pids limit", "pids_limit"),
    ("pidslimit", "pids_limit"),
    ("swap limit", "mem_limit"),
    ("memory limit", "mem_limit"),
    ("minimum memory", "mem_limit"),
    ("nanocpus", "cpus"),
    ("range of cpus", "cpus"),
    ("cpu cfs", "cpus"),
    ("no-new-privileges", "no_new_privileges"),
    ("seccomp", "no_new_privileges"),
    ("docker-init", "init"),
    ("init binary", "init"),
    ("capabilit", "cap_drop/cap_add"),
    ("network mode", "network"),
)


def _hardening_option(message: str) -> str | None:
    lowered = message.lower()
    for word, option in _HARDENING_WORDS:
        if word in lowered:
            return option
    return None


_shared_client: "docker.DockerClient | None" = None
_shared_client_lock = threading.Lock()


def default_client() -> "docker.DockerClient":
    """One client for every sandbox made without one (created on first use)."""
    global _shared_client
    with _shared_client_lock:
        if _shared_client is None:
            import docker

            # exec_run in fallback mode blocks for the whole command, so allow long reads; many
            # sandboxes start and stop at once, so keep more than urllib3's 10 connections.
            _shared_client = docker.from_env(timeout=600, max_pool_size=64)
        return _shared_client


class DockerSandbox(ServerSandbox):
    """A running hardened container. Use as a context manager or call `close()`."""

    def __init__(self, image: str, config: DockerSandboxConfig | Mapping[str, Any] | None = None, *,
                 client: "docker.DockerClient | None" = None):
        self.config = config if isinstance(config, DockerSandboxConfig) else DockerSandboxConfig.from_config(config)
        self.image = image
        self.workdir = self.config.workdir
        self.output_cap = self.config.output_cap
        self.default_timeout = self.config.default_timeout
        self._client = client or default_client()
        self._api = self._client.api
        self._closed = False
        self._channel: ServerChannel | None = None
        self._stderr_tail = b""
        self._fallback_lock = threading.Lock()
        self._close_callbacks: list[Callable[["DockerSandbox"], None]] = []
        self.container_id = self._create()
        try:
            self._start()
        except BaseException:
            if self._channel is not None:
                self._channel.close()
            self._remove()
            raise

    # ------------------------------------------------------------------ lifecycle

    def _host_config(self) -> dict[str, Any]:
        c = self.config
        return self._api.create_host_config(
            network_mode=c.network,
            cap_drop=list(c.cap_drop) or None,
            cap_add=list(c.cap_add) or None,
            security_opt=["no-new-privileges"] if c.no_new_privileges else None,
            init=c.init,
            pids_limit=c.pids_limit,
            mem_limit=c.mem_limit,
            memswap_limit=c.mem_limit,  # no swap: the memory limit is the limit
            nano_cpus=int(c.cpus * 1e9),
            # Replies travel over the attach socket; a json-file log would keep a second copy
            # of every command's output on the host's disk for the container's lifetime.
            log_config={"type": "none", "config": {}},
        )

    def _create(self) -> str:
        import docker.errors

        c = self.config
        command = ["python3", SERVER_PATH, "--workdir", c.workdir] if c.fast_exec else ["sleep", "infinity"]
        try:
            created = self._api.create_container(
                self.image,
                command=command,
                user=c.user,
                working_dir=c.workdir,
                environment=dict(c.env),
                labels={**c.labels, **owner_labels(), KIND_LABEL: "sandbox"},
                name=f"agent-rl-{os.getpid()}-{uuid.uuid4().hex[:10]}",
                # docker-py pairs this with StdinOnce: when our process dies its attach socket
                # closes, the server reads EOF and exits, and the container stops by itself.
                stdin_open=c.fast_exec,
                tty=False,
                host_config=self._host_config(),
            )
        except docker.errors.ImageNotFound as exc:
            raise SandboxError(f"image {self.image!r} not found (build it: `agent-rl images build`)") from exc
        except docker.errors.APIError as exc:
            option = _hardening_option(str(exc))
            if option:
                raise HardeningUnsupported(f"the Docker engine refused hardening option {option}: {exc}") from exc
            raise SandboxError(f"could not create a container from {self.image!r}: {exc}") from exc
        container_id = created["Id"]
        for warning in created.get("Warnings") or []:
            option = _hardening_option(warning)
            if option:
                self._api.remove_container(container_id, force=True)
                raise HardeningUnsupported(f"the Docker engine discarded hardening option {option}: {warning}")
            log.warning("docker create %s: %s", container_id[:12], warning)
        return container_id

    def _start(self) -> None:
        import docker.errors

        if not self._image_has_current_server():
            self._api.put_archive(self.container_id, "/", _server_archive())
        if self.config.fast_exec:
            sock = self._api.attach_socket(
                self.container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            self._channel = ServerChannel(AttachSocketTransport(sock, on_stderr=self._keep_stderr))
        try:
            self._api.start(self.container_id)
        except docker.errors.APIError as exc:
            option = _hardening_option(str(exc))
            if option:
                raise HardeningUnsupported(f"the Docker engine refused hardening option {option}: {exc}") from exc
            raise SandboxError(f"could not start a container from {self.image!r}: {exc}") from exc
        try:
            self.ping(timeout=self.config.start_timeout)
        except SandboxDied as exc:
            raise SandboxError(
                f"sandbox from {self.image!r} did not come up ({exc}); the image needs bash and python3. "
                f"Server stderr: {self._stderr_tail.decode(errors='replace')[-1000:]}"
            ) from exc

    def _image_has_current_server(self) -> bool:
        """False for foreign images and for ours built with another server version: then the
        current server is copied into the container before it starts."""
        from sandboxes.images import SERVER_DIGEST_LABEL, server_digest

        labels = (self._api.inspect_image(self.image).get("Config") or {}).get("Labels") or {}
        return labels.get(SERVER_DIGEST_LABEL) == server_digest(_server_source())

    def _keep_stderr(self, data: bytes) -> None:
        self._stderr_tail = (self._stderr_tail + data)[-8192:]

    def add_close_callback(self, callback: Callable[["DockerSandbox"], None]) -> None:
        """Run `callback(self)` once the container is removed (the pool frees its slot so)."""
        self._close_callbacks.append(callback)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._channel is not None:
            self._channel.close()
        try:
            self._remove()
        finally:
            for callback in self._close_callbacks:
                callback(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def _remove(self) -> None:
        import docker.errors

        try:
            self._api.remove_container(self.container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                # Never crash an episode on cleanup; the label reaper removes leftovers.
                log.warning("could not remove sandbox container %s: %s", self.container_id[:12], exc)

    def __repr__(self) -> str:
        return f"DockerSandbox(image={self.image!r}, container={self.container_id[:12]})"

    # ------------------------------------------------------------------ death

    def _death_reason(self) -> str:
        import docker.errors

        try:
            state = self._api.inspect_container(self.container_id)["State"]
        except docker.errors.NotFound:
            return "container was removed"
        except Exception as exc:  # the engine itself is unreachable
            return f"engine unreachable: {exc}"
        if state.get("Running"):
            return ""
        return (f"container stopped (exit code {state.get('ExitCode')}, OOMKilled={state.get('OOMKilled')}"
                f"{', error: ' + state['Error'] if state.get('Error') else ''})")

    def _died(self, why: str) -> SandboxDied:
        self._closed_by_death()
        return SandboxDied(f"sandbox {self.container_id[:12]} ({self.image}) died: {why}")

    def _closed_by_death(self) -> None:
        if self._channel is not None:
            self._channel.close()

    # ------------------------------------------------------------------ requests

    def _request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self._closed:
            raise SandboxError(f"{self!r} is closed")
        if self.config.fast_exec:
            assert self._channel is not None
            try:
                return self._channel.request(payload, timeout)
            except ChannelClosed:
                raise self._died(self._death_reason() or "command server exited") from None
            except ChannelTimeout:
                reason = self._death_reason()
                if not reason:
                    # Alive but deaf: unusable. Kill it rather than hang the caller next time.
                    self._api.kill(self.container_id)
                    reason = f"command server did not answer within {timeout:.0f}s; container killed"
                raise self._died(reason) from None
        return self._request_via_exec_run(payload)

    def _request_via_exec_run(self, payload: dict[str, Any]) -> dict[str, Any]:
        import docker.errors
        import requests.exceptions

        encoded = base64.b64encode(json.dumps({**payload, "id": 0}).encode()).decode()
        command = ["python3", SERVER_PATH, "--workdir", self.workdir, "--state-dir", FALLBACK_STATE_DIR,
                   "--request", encoded]
        with self._fallback_lock:  # one shell session: commands run one after another
            try:
                exec_id = self._api.exec_create(self.container_id, command, stdout=True, stderr=False,
                                                user=self.config.user)["Id"]
                output = self._api.exec_start(exec_id)
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                # RequestException: e.g. the client's read timeout ran out on a long command.
                reason = self._death_reason()
                if reason:
                    raise self._died(reason) from exc
                raise SandboxError(f"docker exec failed: {exc}") from exc
        try:
            return check_reply(json.loads(output.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            reason = self._death_reason()
            if reason:
                raise self._died(reason) from None
            raise SandboxError(f"garbled reply from exec_run: {output[-500:]!r}") from None

    def read_bytes(self, path: str, max_bytes: int = READ_LIMIT_BYTES) -> bytes:
        if self.config.fast_exec:
            return super().read_bytes(path, max_bytes)
        return self._get_archive_file(self._absolute(path), max_bytes)

    def write_file(self, path: str, content: str | bytes) -> None:
        if self.config.fast_exec:
            super().write_file(path, content)
            return
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        self._put_files(self._absolute(path), {posixpath.basename(path): (data, 0o644)})

    def upload(self, local_path: str, remote_path: str) -> None:
        """Copy a local file or directory to `remote_path` (owned by the sandbox user)."""
        source = Path(local_path)
        if not source.exists():
            raise FileNotFoundError(f"upload source does not exist: {local_path}")
        remote = self._absolute(remote_path)
        buffer = io.BytesIO()
        uid, gid = _numeric_user(self.config.user)
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(str(source), arcname=posixpath.basename(remote.rstrip("/")),
                    filter=lambda info: _owned(info, uid, gid))
        self._ensure_dir(posixpath.dirname(remote))
        self._put_archive(posixpath.dirname(remote), buffer.getvalue())

    # ------------------------------------------------------------------ archive helpers

    def _absolute(self, path: str) -> str:
        return path if path.startswith("/") else posixpath.join(self.workdir, path)

    def _ensure_dir(self, directory: str) -> None:
        result = self.exec(f"mkdir -p -- {_shell_quote(directory)}", timeout=30)
        if result.exit_code != 0:
            raise PermissionError(f"cannot create {directory} in the sandbox: {result.output.strip()}")

    def _put_files(self, remote_path: str, files: dict[str, tuple[bytes, int]]) -> None:
        uid, gid = _numeric_user(self.config.user)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, (data, mode) in files.items():
                info = _owned(tarfile.TarInfo(name), uid, gid)
                info.size, info.mode, info.mtime = len(data), mode, int(time.time())
                tar.addfile(info, io.BytesIO(data))
        directory = posixpath.dirname(remote_path)
        self._ensure_dir(directory)
        self._put_archive(directory, buffer.getvalue())

    def _put_archive(self, directory: str, data: bytes) -> None:
        import docker.errors

        try:
            self._api.put_archive(self.container_id, directory, data)
        except docker.errors.NotFound as exc:
            raise self._died(self._death_reason() or str(exc)) from exc

    def _get_archive_file(self, path: str, max_bytes: int) -> bytes:
        import docker.errors

        try:
            stream, _ = self._api.get_archive(self.container_id, path)
        except docker.errors.NotFound as exc:
            reason = self._death_reason()
            if reason:
                raise self._died(reason) from exc
            raise FileNotFoundError(f"no such file in the sandbox: {path}") from exc
        with tarfile.open(fileobj=_ChunkReader(stream), mode="r|") as tar:  # streamed: no full copy in memory
            member = tar.next()
            if member is None or not member.isfile():
                raise IsADirectoryError(f"not a regular file in the sandbox: {path}")
            if member.size > max_bytes:
                raise FileTooLarge(f"{path} is {member.size} bytes, over the {max_bytes}-byte read limit")
            extracted = tar.extractfile(member)
            assert extracted is not None
            return extracted.read()


class _ChunkReader(io.RawIOBase):
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


def _numeric_user(user: str) -> tuple[int, int]:
    uid, _, gid = user.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        return 1000, 1000  # a named user: our images make `agent` 1000:1000


def _owned(info: tarfile.TarInfo, uid: int, gid: int) -> tarfile.TarInfo:
    info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
    return info


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@functools.lru_cache(maxsize=1)
def _server_source() -> bytes:
    return SERVER_SOURCE.read_bytes()


def _server_archive() -> bytes:
    """The server as a tar, for images without (the current version of) it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("opt", "opt/agent-rl"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = _server_source()
        info = tarfile.TarInfo(SERVER_PATH.lstrip("/"))
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
