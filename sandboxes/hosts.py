"""Sandboxes on several Docker engines: endpoints, placement by free capacity, images copied
to the engine that needs them, leaked containers reaped on every engine, dead engines skipped.

`DockerHosts([...])` takes the endpoints a run may use (`env.docker_hosts` in the recipes):

    unix:///var/run/docker.sock     a local engine (another daemon has its own socket)
    tcp://10.0.0.7:2376             a remote engine over TLS (tls_ca / tls_cert / tls_key);
                                    plain TCP is refused: it hands out root on that machine
    ssh://agent@10.0.0.7[:22]       a remote engine through the `ssh` binary (its config, keys and
                                    known hosts; never a prompt): `docker system dial-stdio` there

`place()` picks the live engine with the most free capacity (`max_containers` minus the
containers this process holds there) and counts the new container against it; `release()`
gives the slot back when that container closes. `ensure_image(host, tag)` makes the image
exist on `host`: present already, or streamed from an engine that has it (`docker save` into
`docker load`, chunk by chunk, never the whole image in memory). A host whose engine stops
answering is marked dead and gets nothing more; what was running there ends as the sandbox
layer always ends a vanished container (`SandboxDied`).

Hardening is the sandbox's own (DockerSandboxConfig), so it holds on every engine alike.
What this layer cannot vouch for on a remote engine: that engine's own daemon settings
(userns remapping, seccomp profile, cgroup limits being enforced) are its operator's.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence
from urllib.parse import urlparse

from pydantic import Field, model_validator

from sandboxes.base import SandboxError
from strictconfig import StrictModel

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

SCHEMES = ("unix", "tcp", "ssh")


class DockerHostConfig(StrictModel):
    """One Docker engine sandboxes may run on (an item of `env.docker_hosts`)."""

    config_where: ClassVar[str] = "env.docker_hosts[]"

    url: str
    """unix:///path/docker.sock, tcp://HOST:PORT (with TLS), ssh://USER@HOST[:PORT]."""
    name: str | None = None
    """How logs and metrics name it; None: the URL."""
    max_containers: int = Field(16, ge=1)
    """Containers this run may hold on it at once (workspaces and graders)."""
    tls_ca: str | None = None
    """tcp: the CA certificate that signed the engine's certificate."""
    tls_cert: str | None = None
    """tcp: this client's certificate."""
    tls_key: str | None = None
    """tcp: this client's key."""

    @model_validator(mode="after")
    def _endpoint(self) -> "DockerHostConfig":
        scheme = urlparse(self.url).scheme
        if scheme not in SCHEMES:
            raise ValueError(f"url {self.url!r}: the scheme must be one of {', '.join(SCHEMES)}")
        if scheme == "tcp" and not (self.tls_ca and self.tls_cert and self.tls_key):
            raise ValueError(f"url {self.url!r}: a tcp:// engine needs tls_ca, tls_cert and tls_key "
                             "(plain TCP gives anyone who can reach the port root on that machine)")
        if scheme == "ssh":
            parsed = urlparse(self.url)
            try:
                parsed.port  # noqa: B018  (raises on a port that is not a number)
            except ValueError:
                raise ValueError(f"url {self.url!r}: the port of an ssh:// engine must be a number") from None
            if not parsed.hostname:
                raise ValueError(f"url {self.url!r}: an ssh:// engine needs a host (ssh://USER@HOST[:PORT])")
        return self

    @property
    def label(self) -> str:
        return self.name or self.url


@dataclass(eq=False)
class DockerHost:
    """One engine: its client (made on first use), the containers held there, and whether it is alive."""

    config: DockerHostConfig
    in_use: int = 0
    placed: int = 0  # containers ever placed here (for tests and metrics)
    dead: str = ""  # why it was given up, '' while it is alive
    images: set[str] = field(default_factory=set)
    _client: "docker.DockerClient | None" = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.config.label

    @property
    def free(self) -> int:
        return self.config.max_containers - self.in_use

    @property
    def client(self) -> "docker.DockerClient":
        with self._lock:
            if self._client is None:
                self._client = _make_client(self.config)
            return self._client

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # any failure to answer is "not answering"
            return False

    def has_image(self, tag: str) -> bool:
        import docker.errors

        try:
            self.client.images.get(tag)
            return True
        except docker.errors.ImageNotFound:
            return False

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _make_client(config: DockerHostConfig) -> "docker.DockerClient":
    import docker

    if config.url.startswith("ssh://"):
        from sandboxes.ssh_transport import ssh_client

        return ssh_client(config.url, config.label)
    # As default_client(): long reads for blocking execs, a large connection pool.
    if not config.tls_ca:
        return docker.DockerClient(base_url=config.url, timeout=600, max_pool_size=64)
    tls = docker.tls.TLSConfig(client_cert=(config.tls_cert, config.tls_key), ca_cert=config.tls_ca, verify=True)
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on many machines) replace the
    # engine's own CA, and HTTPS_PROXY route the engine's traffic: both are wrong for a Docker
    # engine. The client is made with a fixed API version (no request yet), the environment is
    # switched off, then the version is negotiated as version="auto" would.
    client = docker.DockerClient(base_url=config.url, tls=tls, timeout=600, max_pool_size=64, version="1.41")
    client.api.trust_env = False
    try:
        client.api._version = client.api.version(api_version=False)["ApiVersion"]
    except Exception:
        client.close()
        raise
    return client


class NoLiveHost(SandboxError):
    """Every configured Docker engine is dead or full."""


class DockerHosts:
    """The engines of a run, and where the next container goes."""

    def __init__(self, configs: Sequence[DockerHostConfig | dict[str, Any]]) -> None:
        if not configs:
            raise ValueError("DockerHosts needs at least one endpoint")
        self.hosts = [DockerHost(c if isinstance(c, DockerHostConfig) else DockerHostConfig.from_config(c))
                      for c in configs]
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError(f"docker hosts must have distinct names (or URLs): {names}")
        self._lock = threading.Lock()
        self._image_locks: dict[tuple[str, str], threading.Lock] = {}

    # ------------------------------------------------------------------ placement
    def place(self) -> DockerHost:
        """The live host with the most free capacity; its count goes up by one (release it)."""
        with self._lock:
            alive = [h for h in self.hosts if not h.dead]
            if not alive:
                raise NoLiveHost("no Docker host is alive: " + "; ".join(f"{h.name}: {h.dead}" for h in self.hosts))
            host = max(alive, key=lambda h: (h.free, -h.placed))
            host.in_use += 1
            host.placed += 1
            return host

    def release(self, host: DockerHost) -> None:
        with self._lock:
            host.in_use = max(0, host.in_use - 1)

    def alive(self) -> list[DockerHost]:
        with self._lock:
            return [h for h in self.hosts if not h.dead]

    def mark_dead(self, host: DockerHost, reason: str) -> None:
        with self._lock:
            if host.dead:
                return
            host.dead = reason or "stopped answering"
        log.warning("docker host %s is gone (%s): placing new sandboxes elsewhere", host.name, host.dead)

    # ------------------------------------------------------------------ images
    def _copy_image(self, host: DockerHost, tag: str) -> None:
        """Stream `tag` to `host` from a live host that has it or, failing that, from this
        machine's own engine (where task images are built), which need not be a sandbox host."""
        from sandboxes.deployment import default_client

        source = next((h for h in self.alive() if h is not host and h.has_image(tag)), None)
        client, name = (source.client, source.name) if source is not None else (default_client(), "this machine's engine")
        if source is None:
            try:
                client.images.get(tag)
            except Exception:
                raise SandboxError(f"image {tag!r} is neither on a live Docker host nor on this machine's engine, "
                                   f"so it cannot be copied to {host.name}") from None
        log.info("copying image %s from %s to %s", tag, name, host.name)
        # get_image streams `docker save` in chunks; load_image streams them into `docker load`.
        for _ in host.client.api.load_image(client.api.get_image(tag)):
            pass

    def ensure_image(self, host: DockerHost, tag: str) -> None:
        """Make `tag` exist on `host`: there already, or copied from a live host that has it."""
        if tag in host.images:
            return
        with self._lock:
            lock = self._image_locks.setdefault((host.name, tag), threading.Lock())
        with lock:
            if tag in host.images:
                return
            if not host.has_image(tag):
                self._copy_image(host, tag)
                if not host.has_image(tag):
                    raise SandboxError(f"copying image {tag!r} to {host.name} did not leave it there")
            host.images.add(tag)

    # ------------------------------------------------------------------ lifecycle
    def reap_leaked(self) -> list[str]:
        """Remove this machine's dead processes' sandbox containers on every live host."""
        from sandboxes.reaper import reap

        removed: list[str] = []
        for host in self.alive():
            try:
                removed += reap(host.client)
            except Exception as exc:  # an engine that cannot be listed is not worth failing the run for
                log.warning("could not reap leaked sandboxes on %s: %s", host.name, exc)
        return removed

    def stats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {h.name: {"in_use": h.in_use, "placed": h.placed, "dead": h.dead} for h in self.hosts}

    def close(self) -> None:
        for host in self.hosts:
            host.close()


__all__ = ["DockerHost", "DockerHostConfig", "DockerHosts", "NoLiveHost"]
