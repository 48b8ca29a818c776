"""Docker engines reached through the `ssh` binary: ssh://USER@HOST[:PORT] in `env.docker_hosts`.

Not docker-py's own ssh:// support: it imports paramiko even to shell out to `ssh` (not a
dependency here), and its shell-out "socket" reads a pipe with read(n), which blocks until n
bytes arrive: the attach socket every sandbox talks through (fast_exec) hangs on it, and no
timeout applies. Here each HTTP connection is one `ssh HOST docker system dial-stdio` whose
stdin and stdout are one end of a socketpair, so docker-py gets a real socket, exactly as
with unix:// (select, timeouts, shutdown, the attach socket). Tested against a real sshd in
tests/sandboxes/test_ssh_docker_host.py.
"""
from __future__ import annotations

import functools
import http.client
import socket
import subprocess
import tempfile
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sandboxes.base import SandboxError

if TYPE_CHECKING:
    import docker

SSH_CONNECT_TIMEOUT_S = 15
"""ssh's ConnectTimeout: TCP connect plus the ssh handshake (an unreachable host fails in this)."""
SSH_FIRST_ANSWER_S = 60
"""The engine's first answer (API version) over a new ssh endpoint must come within this."""


class SSHFailed(OSError):
    """`ssh` to a Docker host exited; the message names the endpoint and quotes ssh's stderr."""


class _SSHEndpoint:
    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.url = url
        # BatchMode: never a password, passphrase or host-key prompt (it would hang an unattended
        # run); an unknown host key is refused unless the user's ssh config says otherwise.
        # ServerAlive: a host that vanishes ends its connections (so the host is marked dead)
        # in about a minute instead of the TCP timeout. Everything else is the user's ssh config.
        self.argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
                     "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if parsed.username:
            self.argv += ["-l", parsed.username]
        if parsed.port:
            self.argv += ["-p", str(parsed.port)]
        self.argv += ["--", parsed.hostname or "", "docker", "system", "dial-stdio"]
        self.last_failure = ""

    def failed(self, why: str) -> SSHFailed:
        self.last_failure = why
        return SSHFailed(f"docker host {self.url}: {why}")


@functools.lru_cache(maxsize=None)
def _ssh_adapter_class() -> type:
    """The ssh transport's classes, made on first use (this module imports no docker-py at import)."""
    import urllib3
    import urllib3.connection
    import urllib3.connectionpool
    from docker.transport.basehttpadapter import BaseHTTPAdapter

    RecentlyUsedContainer = urllib3._collections.RecentlyUsedContainer  # as docker-py's own adapters

    class _SSHConnection(urllib3.connection.HTTPConnection):
        def __init__(self, endpoint: _SSHEndpoint, timeout: Any) -> None:
            super().__init__("localhost", timeout=timeout)
            self._endpoint = endpoint
            self._proc: subprocess.Popen[bytes] | None = None
            self._stderr: Any = None

        def _new_conn(self) -> socket.socket:
            ours, theirs = socket.socketpair()
            self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: ssh never blocks on it
            try:
                # Its own session: a Ctrl-C meant for this process does not cut the engine's connections.
                self._proc = subprocess.Popen(self._endpoint.argv, stdin=theirs, stdout=theirs, stderr=self._stderr,
                                              start_new_session=True)
            except FileNotFoundError:
                ours.close()
                raise self._endpoint.failed("the ssh client (`ssh`) is not installed or not on PATH") from None
            finally:
                theirs.close()
            ours.settimeout(self.timeout)
            return ours

        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            proc, stderr = self._proc, self._stderr  # http.client closes the connection before it raises
            try:
                return super().getresponse(*args, **kwargs)
            except (http.client.HTTPException, ConnectionError) as exc:
                # The engine's end closed (EOF, or a reset when ssh died with our request unread):
                # if ssh exited, say why in its own words.
                failure = self._exit_reason(proc, stderr)
                if failure is not None:
                    raise failure from exc
                raise

        def _exit_reason(self, proc: "subprocess.Popen[bytes] | None", stderr: Any) -> SSHFailed | None:
            if proc is None or stderr is None:
                return None
            try:
                code = proc.wait(timeout=5)  # its socket closed: ssh is exiting
            except subprocess.TimeoutExpired:
                return None
            stderr.seek(0)
            words = "; ".join(line.strip() for line in stderr.read()[-2000:].decode(errors="replace").splitlines()
                              if line.strip())
            return self._endpoint.failed(f"ssh exited with status {code}" + (f": {words}" if words else ""))

        def close(self) -> None:
            # Closing the socket ends ssh (EOF on its stdin) unless docker-py still reads the same
            # socket through a file (a container's attach socket): then it ends when that closes.
            # Never waited for here; the subprocess module reaps it. The stderr file closes with
            # its last reference.
            super().close()
            self._proc = self._stderr = None

    class _SSHConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
        def __init__(self, endpoint: _SSHEndpoint, timeout: float, maxsize: int) -> None:
            super().__init__("localhost", timeout=timeout, maxsize=maxsize)
            self._endpoint = endpoint
            self._connect_timeout = timeout

        def _new_conn(self) -> _SSHConnection:
            return _SSHConnection(self._endpoint, self._connect_timeout)

    class _SSHAdapter(BaseHTTPAdapter):
        """docker-py's transport for the placeholder base URL, as its UnixHTTPAdapter, over ssh."""

        def __init__(self, endpoint: _SSHEndpoint, timeout: float, max_pool_size: int) -> None:
            self._endpoint = endpoint
            self.timeout = timeout
            self.max_pool_size = max_pool_size
            self.pools = RecentlyUsedContainer(10, dispose_func=lambda pool: pool.close())
            super().__init__()

        def get_connection(self, url: str, proxies: Any = None) -> _SSHConnectionPool:
            with self.pools.lock:
                pool = self.pools.get(url)
                if pool is None:
                    pool = self.pools[url] = _SSHConnectionPool(self._endpoint, self.timeout, self.max_pool_size)
                return pool

        def request_url(self, request: Any, proxies: Any) -> str:
            return request.path_url

    return _SSHAdapter


def ssh_client(url: str, label: str | None = None) -> "docker.DockerClient":
    """A docker-py client for the engine behind `url` (ssh://USER@HOST[:PORT]), checked to answer;
    SandboxError naming the endpoint (and quoting ssh) when it does not."""
    import docker

    endpoint = _SSHEndpoint(url)
    # Made for a placeholder unix socket (never opened: a fixed API version means no request),
    # then its transport replaced by ssh; the version is negotiated as version="auto" would.
    client = docker.DockerClient(base_url="unix:///agent-rl-ssh-placeholder.sock", timeout=600, max_pool_size=64,
                                 version="1.41")
    adapter = _ssh_adapter_class()(endpoint, 600, 64)
    client.api.mount("http+docker://", adapter)
    client.api._custom_adapter = adapter
    client.api.trust_env = False  # no HTTP(S)_PROXY or netrc for a Docker engine
    client.api.timeout = SSH_FIRST_ANSWER_S  # a host that accepts ssh but never answers fails in bounded time
    try:
        client.api._version = client.api.version(api_version=False)["ApiVersion"]
    except Exception as exc:
        client.close()
        name = url if not label or label == url else f"{label} ({url})"
        raise SandboxError(f"docker host {name} does not answer over ssh: {endpoint.last_failure or exc}") from exc
    client.api.timeout = 600
    return client
