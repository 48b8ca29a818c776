"""Hardened Docker containers as sandboxes.

Defaults: no network, user 1000:1000, every capability dropped, no-new-privileges, an init
process, and pids/memory/CPU limits. Relaxing one takes an explicit config key; if the engine
refuses (or warns that it discarded) an option we raise `HardeningUnsupported` naming it.

A `DockerSandbox` is a deployment plus a runtime, as in SWE-ReX: `DockerDeployment`
(`deployment.py`) owns the container (create, harden, label, start, death, remove); the
commands and files go through one `ServerTransport` (`transports.py`) to the command server
in the container, chosen once at start. Normally that is the attach socket to the server
running as the container's main process (no `docker exec` per command, and it works the
same when agent-rl itself runs in a container against the host's Docker socket);
`fast_exec=False` runs the server once per command via `exec_run` instead: slower, same
semantics (persistent cwd/env, process-group kill on timeout).
"""
from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from pydantic import ConfigDict, Field, field_validator, model_serializer, model_validator

from sandboxes.archive import SERVER_PATH, SERVER_SOURCE, numeric_user, tree_archive
from sandboxes.base import (
    DEFAULT_OUTPUT_CAP,
    HardeningUnsupported,
    SandboxDied,
    SandboxError,
)
from sandboxes.deployment import (
    CREATED_LABEL,
    KIND_LABEL,
    MANAGED_LABEL,
    OWNER_HOST_LABEL,
    OWNER_PID_LABEL,
    DockerDeployment,
    default_client,
    hardening_option as _hardening_option,  # noqa: F401  (re-exported: tests and callers import it from here)
    owner_labels,
)
from sandboxes.fastexec import ChannelClosed, ChannelTimeout, ServerSandbox
from sandboxes.transports import FALLBACK_STATE_DIR, ServerTransport, make_dirs
from strictconfig import StrictModel

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

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


class DockerSandbox(ServerSandbox):
    """A running hardened container. Use as a context manager or call `close()`.

    Its `DockerDeployment` owns the container; its `ServerTransport` (attach socket, or
    exec_run with `fast_exec=False`) carries every command and file operation.
    """

    def __init__(self, image: str, config: DockerSandboxConfig | Mapping[str, Any] | None = None, *,
                 client: "docker.DockerClient | None" = None):
        self.config = config if isinstance(config, DockerSandboxConfig) else DockerSandboxConfig.from_config(config)
        self.image = image
        self.workdir = self.config.workdir
        self.output_cap = self.config.output_cap
        self.default_timeout = self.config.default_timeout
        self._closed = False
        self._close_callbacks: list[Callable[["DockerSandbox"], None]] = []
        self._deployment = DockerDeployment(image, self.config, client or default_client())
        self.container_id = self._deployment.create()
        transport: ServerTransport | None = None
        try:
            self._transport = transport = self._deployment.start()
            self._await_server()
        except BaseException:
            if transport is not None:
                transport.close()
            self._deployment.remove()
            raise

    def _await_server(self) -> None:
        try:
            self.ping(timeout=self.config.start_timeout)
        except SandboxDied as exc:
            raise SandboxError(
                f"sandbox from {self.image!r} did not come up ({exc}); the image needs bash and python3. "
                f"Server stderr: {self._transport.stderr_tail()}"
            ) from exc

    def add_close_callback(self, callback: Callable[["DockerSandbox"], None]) -> None:
        """Run `callback(self)` once the container is removed (the pool frees its slot so)."""
        self._close_callbacks.append(callback)

    def close(self) -> None:
        """Remove the container (idempotent), then run the close callbacks."""
        if self._closed:
            return
        self._closed = True
        self._transport.close()
        try:
            self._deployment.remove()
        finally:
            for callback in self._close_callbacks:
                callback(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"DockerSandbox(image={self.image!r}, container={self.container_id[:12]})"

    def _failed(self, error: ChannelClosed | ChannelTimeout) -> SandboxDied:
        reason = self._deployment.death_reason()
        if not reason and isinstance(error, ChannelTimeout):
            # Alive but deaf: unusable. Kill it rather than hang the caller next time.
            self._deployment.kill()
            reason = f"command server did not answer within {error.timeout:.0f}s; container killed"
        self._transport.close()
        return SandboxDied(f"sandbox {self.container_id[:12]} ({self.image}) died: {reason or 'command server exited'}")

    def upload(self, local_path: str, remote_path: str) -> None:
        """Copy a local file or directory to `remote_path` (owned by the sandbox user)."""
        source = Path(local_path)
        if not source.exists():
            raise FileNotFoundError(f"upload source does not exist: {local_path}")
        remote = remote_path if remote_path.startswith("/") else posixpath.join(self.workdir, remote_path)
        data = tree_archive(source, remote, *numeric_user(self.config.user))
        self._call(make_dirs, self._transport, posixpath.dirname(remote))
        self._call(self._deployment.put_archive, posixpath.dirname(remote), data)


__all__ = [
    "CREATED_LABEL",
    "FALLBACK_STATE_DIR",
    "KIND_LABEL",
    "MANAGED_LABEL",
    "OWNER_HOST_LABEL",
    "OWNER_PID_LABEL",
    "SERVER_PATH",
    "SERVER_SOURCE",
    "DockerSandbox",
    "DockerSandboxConfig",
    "HardeningUnsupported",
    "SandboxDied",
    "SandboxError",
    "default_client",
    "owner_labels",
]
