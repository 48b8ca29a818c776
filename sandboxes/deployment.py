"""The Docker side of a sandbox: one hardened container, from create to remove.

`DockerDeployment` creates the container with every hardening option of its
`DockerSandboxConfig` (refusing, never dropping, an option the engine will not apply),
labels it so the reaper can find it if we die, starts it, opens the transport the config
chose, tells why it died, and removes it. What travels over the transport (commands,
files) is the runtime's business: `sandboxes/transports.py` and `ServerSandbox`.
"""
from __future__ import annotations

import logging
import os
import socket
import tarfile
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from sandboxes.archive import (
    SERVER_PATH,
    ChunkReader,
    files_archive,
    numeric_user,
    server_archive,
    server_source,
)
from sandboxes.base import HardeningUnsupported, SandboxError
from sandboxes.fastexec import ChannelClosed, FileTooLarge
from sandboxes.transports import AttachSocketTransport, ExecRunTransport, ServerTransport

if TYPE_CHECKING:
    import docker

    from sandboxes.docker import DockerSandboxConfig

log = logging.getLogger(__name__)

MANAGED_LABEL = "agent-rl.managed"
OWNER_PID_LABEL = "agent-rl.owner-pid"
OWNER_HOST_LABEL = "agent-rl.owner-host"
CREATED_LABEL = "agent-rl.created"
KIND_LABEL = "agent-rl.kind"


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


def hardening_option(message: str) -> str | None:
    """The config key an engine error or warning is about, if it is about hardening."""
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


class DockerDeployment:
    """One hardened container: `create()`, then `start()` (which returns its transport),
    `death_reason()` while it runs, `remove()` at the end."""

    def __init__(self, image: str, config: "DockerSandboxConfig", client: "docker.DockerClient"):
        self.image = image
        self.config = config
        self._api = client.api
        self.container_id = ""

    def __repr__(self) -> str:
        return f"DockerDeployment(image={self.image!r}, container={self.container_id[:12]})"

    # ------------------------------------------------------------------ create / start / remove

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

    def create(self) -> str:
        """Create the container (not started); returns its id. Refused hardening raises
        HardeningUnsupported and leaves nothing behind."""
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
            self._raise_if_refused(exc)
            raise SandboxError(f"could not create a container from {self.image!r}: {exc}") from exc
        self.container_id = created["Id"]
        for warning in created.get("Warnings") or []:
            option = hardening_option(warning)
            if option:
                self.remove()
                raise HardeningUnsupported(f"the Docker engine discarded hardening option {option}: {warning}")
            log.warning("docker create %s: %s", self.container_id[:12], warning)
        return self.container_id

    def start(self) -> ServerTransport:
        """Start the container and open the transport its config chose: the attach socket
        (opened before the start, so no reply is missed) or, with `fast_exec=False`, exec_run."""
        import docker.errors

        if not self._image_has_current_server():
            self._api.put_archive(self.container_id, "/", server_archive())
        transport: ServerTransport
        if self.config.fast_exec:
            sock = self._api.attach_socket(
                self.container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            transport = AttachSocketTransport(sock)
        else:
            transport = ExecRunTransport(self, self.config.workdir)
        try:
            self._api.start(self.container_id)
        except docker.errors.APIError as exc:
            transport.close()
            self._raise_if_refused(exc)
            raise SandboxError(f"could not start a container from {self.image!r}: {exc}") from exc
        return transport

    @staticmethod
    def _raise_if_refused(exc: Exception) -> None:
        option = hardening_option(str(exc))
        if option:
            raise HardeningUnsupported(f"the Docker engine refused hardening option {option}: {exc}") from exc

    def _image_has_current_server(self) -> bool:
        """False for foreign images and for ours built with another server version: then the
        current server is copied into the container before it starts."""
        from sandboxes.images import SERVER_DIGEST_LABEL, server_digest

        labels = (self._api.inspect_image(self.image).get("Config") or {}).get("Labels") or {}
        return labels.get(SERVER_DIGEST_LABEL) == server_digest(server_source())

    def kill(self) -> None:
        """SIGKILL the container (it stays until `remove`)."""
        self._api.kill(self.container_id)

    def remove(self) -> None:
        """Remove the container and its volumes; never raises (the reaper removes leftovers)."""
        import docker.errors

        try:
            self._api.remove_container(self.container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                # Never crash an episode on cleanup; the label reaper removes leftovers.
                log.warning("could not remove sandbox container %s: %s", self.container_id[:12], exc)

    # ------------------------------------------------------------------ death

    def death_reason(self) -> str:
        """Why the container is not running, in words; '' while it runs."""
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

    # ------------------------------------------------------------------ engine-side operations

    def run_server_once(self, argv: list[str]) -> bytes:
        """`docker exec` the command server with `argv` as the sandbox user; its stdout.
        Failures: ChannelClosed when the container is gone, else SandboxError."""
        import docker.errors
        import requests.exceptions

        command = ["python3", SERVER_PATH, *argv]
        try:
            exec_id = self._api.exec_create(self.container_id, command, stdout=True, stderr=False,
                                            user=self.config.user)["Id"]
            return self._api.exec_start(exec_id)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            # RequestException: e.g. the client's read timeout ran out on a long command.
            reason = self.death_reason()
            if reason:
                raise ChannelClosed(reason) from exc
            raise SandboxError(f"docker exec failed: {exc}") from exc

    def put_archive(self, directory: str, data: bytes) -> None:
        """Unpack a tar into `directory` (which must exist)."""
        import docker.errors

        try:
            self._api.put_archive(self.container_id, directory, data)
        except docker.errors.NotFound as exc:
            raise ChannelClosed(self.death_reason() or str(exc)) from exc

    def put_files(self, directory: str, files: dict[str, tuple[bytes, int]]) -> None:
        """Write `{name: (data, mode)}` into `directory`, owned by the sandbox user."""
        self.put_archive(directory, files_archive(files, *numeric_user(self.config.user)))

    def get_file(self, path: str, max_bytes: int) -> bytes:
        """A regular file's contents, streamed; FileTooLarge past `max_bytes`."""
        import docker.errors

        try:
            stream, _ = self._api.get_archive(self.container_id, path)
        except docker.errors.NotFound as exc:
            reason = self.death_reason()
            if reason:
                raise ChannelClosed(reason) from exc
            raise FileNotFoundError(f"no such file in the sandbox: {path}") from exc
        with tarfile.open(fileobj=ChunkReader(stream), mode="r|") as tar:  # streamed: no full copy in memory
            member = tar.next()
            if member is None or not member.isfile():
                raise IsADirectoryError(f"not a regular file in the sandbox: {path}")
            if member.size > max_bytes:
                raise FileTooLarge(f"{path} is {member.size} bytes, over the {max_bytes}-byte read limit")
            extracted = tar.extractfile(member)
            assert extracted is not None
            return extracted.read()
