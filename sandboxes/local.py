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
from pathlib import Path
from typing import Any, ClassVar, Mapping

from pydantic import ConfigDict, Field, field_validator

from sandboxes.base import DEFAULT_OUTPUT_CAP, SandboxDied, SandboxError
from sandboxes.fastexec import ChannelClosed, ChannelTimeout, ServerSandbox
from sandboxes.transports import PipeTransport
from strictconfig import StrictModel

log = logging.getLogger(__name__)
SERVER_SOURCE = Path(__file__).with_name("fastexec_server.py")


class LocalSandboxConfig(StrictModel):
    """How a LocalSandbox (no isolation, see the module docstring) runs its commands."""

    model_config = ConfigDict(frozen=True)
    config_where: ClassVar[str] = "local_sandbox"

    workdir: str | None = None
    """Directory the commands run in; None: a fresh temp dir, deleted on close."""
    output_cap: int = DEFAULT_OUTPUT_CAP
    """Characters of command output handed back; past it the head and tail are kept."""
    default_timeout: float = Field(120.0, gt=0)
    """Seconds a command may run when the caller gives no timeout."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables of every command (values are stringified)."""

    @field_validator("env", mode="before")
    @classmethod
    def _stringify_env(cls, value: Any) -> Any:
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else value


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
