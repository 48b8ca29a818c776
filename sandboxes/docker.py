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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

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
    hardening_option as _hardening_option,
    owner_labels,
)
from sandboxes.fastexec import ChannelClosed, ChannelTimeout, ServerSandbox
from sandboxes.strict import ConfigError, from_mapping
from sandboxes.transports import FALLBACK_STATE_DIR, ServerTransport, make_dirs

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

_MEMORY = re.compile(r"^\d+[bkmg]?$", re.IGNORECASE)


@dataclass(frozen=True)
class DockerSandboxConfig:
    """How a sandbox container is started. Every hardening option is its own key."""

    network: str = "none"  # anything else gives the agent a network: say so explicitly
    user: str = "1000:1000"
    cap_drop: tuple[str, ...] = ("ALL",)
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = True
    init: bool = True
    pids_limit: int = 256
    mem_limit: str = "2g"
    cpus: float = 1.0
    output_cap: int = DEFAULT_OUTPUT_CAP
    default_timeout: float = 120.0
    start_timeout: float = 60.0
    workdir: str = "/testbed"
    fast_exec: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # YAML gives lists; keep the frozen config hashable and immutable.
        object.__setattr__(self, "cap_drop", tuple(self.cap_drop))
        object.__setattr__(self, "cap_add", tuple(self.cap_add))
        object.__setattr__(self, "labels", dict(self.labels))
        object.__setattr__(self, "env", {str(k): str(v) for k, v in dict(self.env).items()})
        if not isinstance(self.pids_limit, int) or self.pids_limit <= 0:
            raise ConfigError(f"pids_limit must be a positive integer, got {self.pids_limit!r}")
        if not _MEMORY.match(str(self.mem_limit)):
            raise ConfigError(f"mem_limit must look like '512m' or '2g', got {self.mem_limit!r}")
        if not isinstance(self.cpus, (int, float)) or self.cpus <= 0:
            raise ConfigError(f"cpus must be a positive number, got {self.cpus!r}")
        for name in ("default_timeout", "start_timeout"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {getattr(self, name)!r}")
        if not self.workdir.startswith("/"):
            raise ConfigError(f"workdir must be absolute, got {self.workdir!r}")
        relaxed = self.relaxations()
        if relaxed:
            log.warning("sandbox hardening relaxed by config: %s", "; ".join(relaxed))

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

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None, where: str = "sandbox") -> "DockerSandboxConfig":
        return from_mapping(cls, data, where)


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
