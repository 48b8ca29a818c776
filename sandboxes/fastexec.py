"""Client side of the fast-exec protocol (see `fastexec_server.py`).

The server speaks JSON lines. Two byte streams carry them: a Docker attach socket (whose
stdout arrives in 8-byte-header frames because the container has no TTY) and the pipes of
a local subprocess. `ServerChannel` turns either into request → reply with a deadline, and
`exec_result` turns an exec reply into an `ExecResult` with head+tail capping.
`ServerSandbox` is the Sandbox API every backend shares on top of a `ServerTransport`
(`sandboxes/transports.py`).
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import select
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, TypeVar

from sandboxes.base import ExecResult, SandboxError, cap_text, truncation_marker
from sandboxes.executor import run_blocking

if TYPE_CHECKING:
    from sandboxes.transports import ServerTransport

T = TypeVar("T")
# How long past a command's own timeout we wait for the server before declaring it dead.
REPLY_GRACE_S = 15.0
FILE_OP_TIMEOUT_S = 60.0
READ_LIMIT_BYTES = 64 * 1024 * 1024


class FileTooLarge(SandboxError):
    """A file to read exceeds the read limit (`read_bytes(..., max_bytes=...)`)."""


# Replies name the exception the server caught; file errors keep their built-in type so
# callers can `except FileNotFoundError` the same way for every backend.
_REPLY_ERRORS: dict[str, type[Exception]] = {
    "FileNotFoundError": FileNotFoundError,
    "IsADirectoryError": IsADirectoryError,
    "NotADirectoryError": NotADirectoryError,
    "PermissionError": PermissionError,
    "FileExistsError": FileExistsError,
    "FileTooLargeError": FileTooLarge,
}


class ChannelClosed(SandboxError):
    """The server's stream ended: the process or container behind it is gone."""


class ChannelTimeout(SandboxError):
    """No reply arrived before the deadline (`timeout` seconds)."""

    def __init__(self, timeout: float):
        super().__init__(f"the command server did not answer within {timeout:.0f}s")
        self.timeout = timeout


class ByteStream(Protocol):
    """The raw pipe to a command server: bytes in, bytes out."""

    def send(self, data: bytes) -> None: ...

    def receive(self, timeout: float) -> bytes:
        """Next bytes of the server's stdout; b"" at end of stream; raise TimeoutError."""
        ...

    def close(self) -> None: ...


def _wait_readable(fileno: int, timeout: float) -> None:
    readable, _, _ = select.select([fileno], [], [], max(timeout, 0.0))
    if not readable:
        raise TimeoutError


def _close_quietly(*closables: Any) -> None:
    """Closing is best effort: the other end may already be gone."""
    for closable in closables:
        try:
            closable.close()
        except OSError:
            pass


class AttachSocketStream:
    """A container's attached stdin/stdout. Without a TTY Docker multiplexes the output
    streams: each frame is [stream, 0, 0, 0, size (u32 big-endian)] then `size` bytes."""

    def __init__(self, sock: Any, on_stderr: Callable[[bytes], None] | None = None):
        self._holder = sock  # keep docker-py's wrapper alive: closing it closes the socket
        self._sock: socket.socket = getattr(sock, "_sock", sock)
        self._sock.setblocking(True)
        self._raw = b""
        self._on_stderr = on_stderr

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ChannelClosed(f"attach socket closed: {exc}") from exc

    def receive(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            payload = self._next_stdout_payload()
            if payload is not None:
                return payload
            # TLS sockets (DOCKER_HOST=tcp with TLS) may hold decrypted bytes select() cannot see.
            pending = getattr(self._sock, "pending", None)
            if not (pending and pending()):
                _wait_readable(self._sock.fileno(), deadline - time.monotonic())
            try:
                chunk = self._sock.recv(1 << 16)
            except OSError as exc:
                raise ChannelClosed(f"attach socket failed: {exc}") from exc
            if not chunk:
                return b""
            self._raw += chunk

    def _next_stdout_payload(self) -> bytes | None:
        while len(self._raw) >= 8:
            stream, size = self._raw[0], struct.unpack(">I", self._raw[4:8])[0]
            if len(self._raw) < 8 + size:
                return None
            payload, self._raw = self._raw[8 : 8 + size], self._raw[8 + size :]
            if stream == 1:
                return payload
            if stream == 2 and self._on_stderr:
                self._on_stderr(payload)
        return None

    def close(self) -> None:
        # A thread blocked in select()/recv() on this socket is not woken by close() from
        # another thread; shutdown() is, so a cut episode's worker returns at once (SandboxDied)
        # instead of when its command's own timeout runs out.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        _close_quietly(self._sock, self._holder)


class PipeStream:
    """stdin/stdout pipes of a local server subprocess."""

    def __init__(self, stdin: Any, stdout: Any):
        self._stdin, self._stdout = stdin, stdout

    def send(self, data: bytes) -> None:
        try:
            self._stdin.write(data)
            self._stdin.flush()
        except (OSError, ValueError) as exc:
            raise ChannelClosed(f"server pipe closed: {exc}") from exc

    def receive(self, timeout: float) -> bytes:
        _wait_readable(self._stdout.fileno(), timeout)
        return os.read(self._stdout.fileno(), 1 << 16)

    def close(self) -> None:
        _close_quietly(self._stdin, self._stdout)


class ServerChannel:
    """One request at a time over a transport; replies matched by id."""

    def __init__(self, stream: ByteStream):
        self._stream = stream
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._buffer = b""

    def request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        with self._lock:
            request_id = next(self._ids)
            self._stream.send(json.dumps({**payload, "id": request_id}).encode() + b"\n")
            deadline = time.monotonic() + timeout
            while True:
                reply = self._read_line(deadline, timeout)
                if reply.get("id") == request_id:
                    return check_reply(reply)
                # A reply to an earlier request that timed out on our side: skip it.

    def _read_line(self, deadline: float, timeout: float) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout(timeout)
            try:
                chunk = self._stream.receive(remaining)
            except TimeoutError:
                raise ChannelTimeout(timeout) from None
            if not chunk:
                raise ChannelClosed("the sandbox's command server stream ended")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError as exc:
            raise SandboxError(f"garbled reply from the command server: {line[:200]!r}") from exc

    def close(self) -> None:
        self._stream.close()


def check_reply(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok"):
        return reply
    error = _REPLY_ERRORS.get(str(reply.get("kind")), SandboxError)
    raise error(f"{reply.get('kind')}: {reply.get('error')}")


def max_bytes_for(cap: int) -> int:
    # A character takes at most 4 UTF-8 bytes, and a bad byte becomes one replacement
    # character, so 2*cap bytes of head and of tail always decode to enough characters.
    return 4 * cap if cap > 0 else 1 << 62


def exec_result(reply: dict[str, Any], cap: int) -> ExecResult:
    head = base64.b64decode(reply["head"])
    tail = base64.b64decode(reply["tail"])
    common = dict(exit_code=int(reply["exit_code"]), timed_out=bool(reply["timed_out"]),
                  duration_s=float(reply.get("duration", 0.0)))
    if not tail:
        text, truncated = cap_text(head.decode("utf-8", errors="replace"), cap)
        return ExecResult(output=text, truncated=truncated, **common)
    head_text = head.decode("utf-8", errors="replace")[: cap // 2]
    tail_text = tail.decode("utf-8", errors="replace")[-(cap - cap // 2) :]
    # Exact for ASCII; for other text a byte-based estimate (the middle was never sent).
    dropped = int(reply["size"]) - len(head_text.encode()) - len(tail_text.encode())
    return ExecResult(output=head_text + truncation_marker(dropped) + tail_text, truncated=True, **common)



class ServerSandbox:
    """The Sandbox methods every backend shares once a `ServerTransport` reaches its command server.

    Subclasses set `workdir`, `output_cap`, `default_timeout` and `_transport` (chosen once,
    when the sandbox starts), and say in `_failed` what a lost server means for them.
    """

    workdir: str
    output_cap: int
    default_timeout: float
    _transport: "ServerTransport"

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def _failed(self, error: ChannelClosed | ChannelTimeout) -> SandboxError:
        """The error to raise when the transport lost the server (normally SandboxDied)."""
        raise NotImplementedError

    def _call(self, operation: Callable[..., T], *args: Any) -> T:
        """Run a transport operation; a lost server becomes the subclass's error."""
        if self.closed:
            raise SandboxError(f"{self!r} is closed")
        try:
            return operation(*args)
        except (ChannelClosed, ChannelTimeout) as exc:
            raise self._failed(exc) from None

    def _request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self._call(self._transport.request, payload, timeout)

    def ping(self, timeout: float = 5.0) -> None:
        """Round trip to the command server; raises SandboxDied if it is gone."""
        self._request({"op": "ping"}, timeout)

    def exec(self, cmd: str, timeout: float | None = None, cwd: str | None = None,
             env: Mapping[str, str] | None = None) -> ExecResult:
        if not isinstance(cmd, str):
            raise TypeError(f"cmd must be a string, got {type(cmd).__name__}")
        timeout = self.default_timeout if timeout is None else float(timeout)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if "\0" in cmd:  # model text can contain one; it is the command's failure, not ours
            return ExecResult(exit_code=2, output="agent-rl: the command contains a NUL byte; a shell cannot run it\n")
        payload = {
            "op": "exec", "cmd": cmd, "timeout": timeout, "cwd": cwd,
            "env": {str(k): str(v) for k, v in (env or {}).items()},
            "max_bytes": max_bytes_for(self.output_cap),
        }
        return exec_result(self._request(payload, timeout + REPLY_GRACE_S), self.output_cap)

    async def aexec(self, cmd: str, timeout: float | None = None, cwd: str | None = None,
                    env: Mapping[str, str] | None = None) -> ExecResult:
        return await run_blocking(self.exec, cmd, timeout, cwd, env)

    def read_bytes(self, path: str, max_bytes: int = READ_LIMIT_BYTES) -> bytes:
        """File contents; relative paths are relative to `workdir`. Raises FileTooLarge past
        `max_bytes`."""
        return self._call(self._transport.read_bytes, path, max_bytes)

    def read_file(self, path: str, max_bytes: int = READ_LIMIT_BYTES) -> str:
        return self.read_bytes(path, max_bytes).decode("utf-8", errors="replace")

    def write_file(self, path: str, content: str | bytes) -> None:
        """Create or replace a file (and its parent directories) as the sandbox user."""
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        self._call(self._transport.write_bytes, path, data)

    async def aread_file(self, path: str) -> str:
        return await run_blocking(self.read_file, path)

    async def awrite_file(self, path: str, content: str | bytes) -> None:
        await run_blocking(self.write_file, path, content)

    def upload(self, local_path: str, remote_path: str) -> None:
        raise NotImplementedError

    async def aupload(self, local_path: str, remote_path: str) -> None:
        await run_blocking(self.upload, local_path, remote_path)

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await run_blocking(self.close)

    def __enter__(self) -> "ServerSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "ServerSandbox":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
