"""The Sandbox contract shared by every backend (Docker, local).

A sandbox runs shell commands in a workspace and moves files in and out. Output is
always text: UTF-8 with bad bytes replaced, and past a cap the head and tail are kept
around a visible marker so the model sees both how a command started and how it ended.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, runtime_checkable

DEFAULT_OUTPUT_CAP = 64 * 1024  # characters handed back per command


class SandboxError(RuntimeError):
    """Base class of everything a sandbox raises."""


class SandboxDied(SandboxError):
    """The container (or process) backing the sandbox is gone: OOM, killed, removed."""


class ExecTimeout(SandboxError):
    """Raised only by callers that ask for exceptions; `exec` itself reports timed_out=True."""


class HardeningUnsupported(SandboxError):
    """The engine refused a hardening option. We never drop one silently."""


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str
    timed_out: bool = False
    truncated: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def truncation_marker(dropped: int) -> str:
    return f"\n\n<<< output truncated: {dropped} characters omitted >>>\n\n"


def cap_text(text: str, cap: int = DEFAULT_OUTPUT_CAP) -> tuple[str, bool]:
    """Keep the head and tail of `text` around a marker if it exceeds `cap` characters."""
    if cap <= 0 or len(text) <= cap:
        return text, False
    head = cap // 2
    tail = cap - head
    dropped = len(text) - head - tail
    return text[:head] + truncation_marker(dropped) + text[-tail:], True


def decode_output(data: bytes, cap: int = DEFAULT_OUTPUT_CAP) -> tuple[str, bool]:
    """UTF-8 decode with replacement, then cap."""
    return cap_text(data.decode("utf-8", errors="replace"), cap)


@runtime_checkable
class Sandbox(Protocol):
    """What envs need from a workspace. Implementations: DockerSandbox, LocalSandbox."""

    workdir: str

    def exec(
        self,
        cmd: str,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult: ...

    async def aexec(
        self,
        cmd: str,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult: ...

    def read_file(self, path: str) -> str: ...

    def write_file(self, path: str, content: str | bytes) -> None: ...

    def upload(self, local_path: str, remote_path: str) -> None: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...

    def __enter__(self) -> "Sandbox": ...

    def __exit__(self, *exc: object) -> None: ...
