"""LocalSandbox: commands as local subprocesses in a temp directory. It does NOT isolate.

Anything the agent runs can read and write your files, use your network and see your
processes. Use it only for trusted code, tests without Docker, or debugging; it is opt-in
and logs a warning every time one is created.

It runs the same command server as the containers (`fastexec_server.py`) as a child
process, reached through the same `ServerTransport` seam (`PipeTransport`), so semantics
match `DockerSandbox`: persistent cwd/env between commands, each command in its own
process group, a timeout kills the group, head+tail output capping.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sandboxes.base import DEFAULT_OUTPUT_CAP, SandboxDied, SandboxError
from sandboxes.fastexec import ChannelClosed, ChannelTimeout, ServerSandbox
from sandboxes.strict import ConfigError, from_mapping
from sandboxes.transports import PipeTransport

log = logging.getLogger(__name__)
SERVER_SOURCE = Path(__file__).with_name("fastexec_server.py")


@dataclass(frozen=True)
class LocalSandboxConfig:
    workdir: str | None = None  # None: a fresh temp dir, deleted on close
    output_cap: int = DEFAULT_OUTPUT_CAP
    default_timeout: float = 120.0
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", {str(k): str(v) for k, v in dict(self.env).items()})
        if not isinstance(self.default_timeout, (int, float)) or self.default_timeout <= 0:
            raise ConfigError(f"default_timeout must be a positive number of seconds, got {self.default_timeout!r}")

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None, where: str = "local_sandbox") -> "LocalSandboxConfig":
        return from_mapping(cls, data, where)


class LocalSandbox(ServerSandbox):
    """Subprocess sandbox in a temp dir. NOT isolated: see the module docstring."""

    def __init__(self, config: LocalSandboxConfig | Mapping[str, Any] | None = None):
        self.config = config if isinstance(config, LocalSandboxConfig) else LocalSandboxConfig.from_config(config)
        self.output_cap = self.config.output_cap
        self.default_timeout = self.config.default_timeout
        self._owns_workdir = self.config.workdir is None
        self.workdir = self.config.workdir or tempfile.mkdtemp(prefix="agent-rl-local-")
        if not os.path.isdir(self.workdir):
            raise SandboxError(f"LocalSandbox workdir does not exist: {self.workdir}")
        log.warning("LocalSandbox runs commands directly on this machine without isolation (workdir %s)",
                    self.workdir)
        env = {**os.environ, **self.config.env, "PYTHONDONTWRITEBYTECODE": "1"}
        self._server = subprocess.Popen(
            [sys.executable, str(SERVER_SOURCE), "--workdir", self.workdir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=self.workdir, env=env,
        )
        assert self._server.stdin is not None and self._server.stdout is not None
        self._transport = PipeTransport(self._server.stdin, self._server.stdout)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _failed(self, error: ChannelClosed | ChannelTimeout) -> SandboxDied:
        if isinstance(error, ChannelTimeout):
            self._server.kill()
            return SandboxDied(f"local command server did not answer within {error.timeout:.0f}s; killed")
        return SandboxDied(f"local command server exited (code {self._server.poll()})")

    def upload(self, local_path: str, remote_path: str) -> None:
        source = Path(local_path)
        if not source.exists():
            raise FileNotFoundError(f"upload source does not exist: {local_path}")
        target = Path(self.workdir, remote_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # EOF makes the server kill the process groups of the commands it started, then exit.
        self._transport.close()
        try:
            self._server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"LocalSandbox(workdir={self.workdir!r})"
