"""How requests reach a sandbox's command server: one typed seam, three transports.

A sandbox holds exactly one `ServerTransport`, chosen once when it starts (never an
`if fast_exec` per call). The same server code (`fastexec_server.py`) answers behind each,
so commands behave the same whichever carries them:

* `AttachSocketTransport` (Docker, the fast path): the server is the container's main
  process and JSON lines travel over the container's attach socket: one round trip per
  command, no `docker exec`.
* `ExecRunTransport` (Docker, `fast_exec=False`): one `docker exec` of the server per
  request (`--request`), the shell session kept in a state file inside the container.
  File contents move through the engine's archive API, since they would not fit in argv.
* `PipeTransport` (LocalSandbox): the server is a local child process, JSON lines over its
  stdin/stdout.

A transport reports a lost server as `ChannelClosed` (the server or its container is gone)
or `ChannelTimeout` (no reply in time); the owning sandbox turns those into `SandboxDied`.
"""
from __future__ import annotations

import base64
import json
import posixpath
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sandboxes.base import SandboxError
from sandboxes.fastexec import (
    FILE_OP_TIMEOUT_S,
    REPLY_GRACE_S,
    AttachSocketStream,
    ChannelClosed,
    PipeStream,
    ServerChannel,
    check_reply,
)

if TYPE_CHECKING:
    from sandboxes.deployment import DockerDeployment

# Session state of the exec_run transport (one server process per request) lives here.
FALLBACK_STATE_DIR = "/tmp/.agent-rl-shell"


@runtime_checkable
class ServerTransport(Protocol):
    """Carries requests to one command server, one at a time, and brings back the replies."""

    def request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request (`{"op": ...}`) and return its checked reply."""
        ...

    def read_bytes(self, path: str, max_bytes: int) -> bytes:
        """A file's contents (relative paths: below the workdir); FileTooLarge past max_bytes."""
        ...

    def write_bytes(self, path: str, data: bytes) -> None:
        """Create or replace a file and its parent directories, owned by the sandbox user."""
        ...

    def stderr_tail(self) -> str:
        """What the server last wrote to stderr, for error messages ('' when not visible)."""
        ...

    def close(self) -> None:
        """Stop talking to the server (for a long-running server: its stdin reaches EOF)."""
        ...


class _ChannelTransport:
    """Requests over a long-running server's stdin/stdout; file ops are server requests too."""

    def __init__(self, channel: ServerChannel):
        self._channel = channel

    def request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self._channel.request(payload, timeout)

    def read_bytes(self, path: str, max_bytes: int) -> bytes:
        reply = self.request({"op": "read", "path": path, "max_bytes": max_bytes}, FILE_OP_TIMEOUT_S)
        return base64.b64decode(reply["data"])

    def write_bytes(self, path: str, data: bytes) -> None:
        self.request({"op": "write", "path": path, "data": base64.b64encode(data).decode()}, FILE_OP_TIMEOUT_S)

    def stderr_tail(self) -> str:
        return ""

    def close(self) -> None:
        self._channel.close()


class AttachSocketTransport(_ChannelTransport):
    """The fast path: a container's attach socket (docker-py's `attach_socket`) to its server."""

    def __init__(self, sock: Any):
        self._stderr = b""
        super().__init__(ServerChannel(AttachSocketStream(sock, on_stderr=self._keep_stderr)))

    def _keep_stderr(self, data: bytes) -> None:
        self._stderr = (self._stderr + data)[-8192:]

    def stderr_tail(self) -> str:
        return self._stderr.decode(errors="replace")[-1000:]


class PipeTransport(_ChannelTransport):
    """A local server subprocess's stdin and stdout pipes."""

    def __init__(self, stdin: Any, stdout: Any):
        super().__init__(ServerChannel(PipeStream(stdin, stdout)))


class ExecRunTransport:
    """The fallback: one `docker exec` per request, through the engine API.

    Slower (engine round trips per command) but needs no attach socket. The `timeout` of a
    request is enforced by the server itself, which runs for as long as the command does.
    """

    def __init__(self, deployment: "DockerDeployment", workdir: str):
        self._deployment = deployment
        self._workdir = workdir
        self._lock = threading.Lock()  # one shell session: requests run one after another

    def request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        encoded = base64.b64encode(json.dumps({**payload, "id": 0}).encode()).decode()
        argv = ["--workdir", self._workdir, "--state-dir", FALLBACK_STATE_DIR, "--request", encoded]
        with self._lock:
            output = self._deployment.run_server_once(argv)
        try:
            return check_reply(json.loads(output.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            reason = self._deployment.death_reason()
            if reason:
                raise ChannelClosed(reason) from None
            raise SandboxError(f"garbled reply from exec_run: {output[-500:]!r}") from None

    def read_bytes(self, path: str, max_bytes: int) -> bytes:
        # The archive API reads a stopped container's files too; a dead sandbox must not
        # answer here when it would not over the attach socket.
        reason = self._deployment.death_reason()
        if reason:
            raise ChannelClosed(reason)
        return self._deployment.get_file(self._absolute(path), max_bytes)

    def write_bytes(self, path: str, data: bytes) -> None:
        remote = self._absolute(path)
        make_dirs(self, posixpath.dirname(remote))
        self._deployment.put_files(posixpath.dirname(remote), {posixpath.basename(remote): (data, 0o644)})

    def _absolute(self, path: str) -> str:
        return path if path.startswith("/") else posixpath.join(self._workdir, path)

    def stderr_tail(self) -> str:
        return ""

    def close(self) -> None:
        """Nothing stays open between requests."""


def make_dirs(transport: ServerTransport, directory: str) -> None:
    """`mkdir -p` as the sandbox user, so the directory is theirs (the archive API writes as root)."""
    reply = transport.request({"op": "exec", "cmd": f"mkdir -p -- {shell_quote(directory)}", "timeout": 30,
                               "cwd": None, "env": {}, "max_bytes": 4096}, 30 + REPLY_GRACE_S)
    if reply["exit_code"] != 0:
        message = base64.b64decode(reply["head"]).decode(errors="replace").strip()
        raise PermissionError(f"cannot create {directory} in the sandbox: {message}")


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"

