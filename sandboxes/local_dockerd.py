"""An extra Docker engine on this machine: a second sandbox host without a second machine.

`ExtraDockerd()` prepares a `dockerd` with its own socket, data root, exec root and
containerd under one short directory in /tmp, the main engine's storage driver, inside a
network namespace of its own (`unshare --net`). The namespace matters: a second daemon in the
host's namespace manages the same `docker0` (with `--bridge=none` it even deletes it, taking
the main engine's default network with it). Sandboxes run with `--network none` anyway. It starts with no images; the sandbox
layer copies task images to it (sandboxes/hosts.py). Used by the multi-host tests and
`benchmarks/distributed_bench.py`; needs root and the `dockerd` binary.

    engine = ExtraDockerd.for_main_engine()
    engine.start()          # then env.docker_hosts: [{url: unix:///var/run/docker.sock}, {url: engine.url}]
    engine.kill()           # the host vanishes: SIGKILL to dockerd and its containerd
    engine.stop(); engine.purge()

With `tls=True` it also listens on TCP port 2376 with dockerd's own mutual TLS (`--tlsverify`:
certificates from a throwaway CA made with the openssl CLI), and a veth pair links its network
namespace to the host's, so `engine.tcp_url` (tcp://10.213.N.2:2376) is an engine at another
address, reached the way a remote one is: `engine.tls_files` are the client's ca/cert/key.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

TLS_PORT = 2376


def make_tls_certs(directory: Path, server_ip: str) -> dict[str, str]:
    """A throwaway CA, a server certificate for `server_ip` and a client certificate (openssl
    CLI). Returns the paths: ca, server_cert, server_key, client_cert, client_key."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: str(directory / f"{name}.pem") for name in
             ("ca", "ca_key", "server_cert", "server_key", "client_cert", "client_key")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=agent-rl test CA",
            "-keyout", paths["ca_key"], "-out", paths["ca"])
    for role, usage, extra in (("server", "serverAuth", f"subjectAltName=IP:{server_ip},IP:127.0.0.1"),
                               ("client", "clientAuth", "subjectAltName=DNS:client")):
        csr, ext = directory / f"{role}.csr", directory / f"{role}.ext"
        ext.write_text(f"extendedKeyUsage={usage}\n{extra}\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={role}",
                "-keyout", paths[f"{role}_key"], "-out", str(csr))
        openssl("x509", "-req", "-in", str(csr), "-CA", paths["ca"], "-CAkey", paths["ca_key"], "-CAcreateserial",
                "-days", "2", "-extfile", str(ext), "-out", paths[f"{role}_cert"])
    return paths


class ExtraDockerd:
    def __init__(self, storage_driver: str, *, tls: bool = False) -> None:
        # A short path: unix socket paths are limited to about 100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="ar-d2-", dir="/tmp"))
        self.url = f"unix://{self.root}/docker.sock"
        self.config = self.root / "daemon.json"
        settings: dict[str, object] = {
            "data-root": str(self.root / "data"), "exec-root": str(self.root / "exec"),
            "pidfile": str(self.root / "docker.pid"), "hosts": [self.url], "storage-driver": storage_driver,
            "iptables": False, "ip-masq": False,
        }
        self.tcp_url: str | None = None
        self.tls_files: dict[str, str] = {}
        if tls:
            # One /30 per engine, picked from its directory name so two test runs do not collide.
            subnet = 1 + int.from_bytes(self.root.name.encode(), "little") % 250
            self._host_ip, self._engine_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
            self._veth = f"ar{subnet}h"
            certs = make_tls_certs(self.root / "tls", self._engine_ip)
            settings["hosts"] = [self.url, f"tcp://0.0.0.0:{TLS_PORT}"]
            settings.update({"tlsverify": True, "tlscacert": certs["ca"], "tlscert": certs["server_cert"],
                             "tlskey": certs["server_key"]})
            self.tcp_url = f"tcp://{self._engine_ip}:{TLS_PORT}"
            self.tls_files = {"tls_ca": certs["ca"], "tls_cert": certs["client_cert"], "tls_key": certs["client_key"]}
        self.config.write_text(json.dumps(settings))
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_main_engine(cls, *, tls: bool = False) -> "ExtraDockerd":
        """One with the storage driver the local engine uses (what works on this kernel)."""
        import docker

        if shutil.which("dockerd") is None or shutil.which("unshare") is None or os.geteuid() != 0:
            raise RuntimeError("an extra Docker engine needs the dockerd and unshare binaries and root")
        client = docker.from_env()
        try:
            return cls(client.info()["Driver"], tls=tls)
        finally:
            client.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        import docker

        log = open(self.root / "dockerd.log", "ab")
        # Its own session, so that kill() takes its containerd along (a host going away).
        self.proc = subprocess.Popen(["unshare", "--net", "dockerd", "--config-file", str(self.config)],
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = docker.DockerClient(base_url=self.url, timeout=5)
                client.ping()
                client.close()
                if self.tcp_url is not None:
                    self._link_network_namespace()
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the extra dockerd did not come up:\n"
                                       + (self.root / "dockerd.log").read_text(errors="replace")[-3000:])
                time.sleep(0.5)

    def _link_network_namespace(self) -> None:
        """A veth pair between the host's network namespace and the engine's, so its TCP
        listener is reachable at `tcp_url` (the namespace, and the pair with it, dies with it)."""
        assert self.proc is not None
        pid = str(self.proc.pid)  # unshare execs dockerd: the same process holds the namespace
        subprocess.run(["ip", "link", "del", self._veth], check=False, capture_output=True)  # a previous start's
        for cmd in (["ip", "link", "add", self._veth, "type", "veth", "peer", "name", "eth0", "netns", pid],
                    ["ip", "addr", "add", f"{self._host_ip}/30", "dev", self._veth],
                    ["ip", "link", "set", self._veth, "up"],
                    ["nsenter", "-t", pid, "-n", "ip", "addr", "add", f"{self._engine_ip}/30", "dev", "eth0"],
                    ["nsenter", "-t", pid, "-n", "ip", "link", "set", "eth0", "up"],
                    ["nsenter", "-t", pid, "-n", "ip", "link", "set", "lo", "up"]):
            subprocess.run(cmd, check=True, capture_output=True)

    def kill(self) -> None:
        """SIGKILL dockerd and its containerd: the host vanishes mid-whatever."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def purge(self) -> None:
        """Leave nothing behind: container shims that outlived a killed daemon, the mounts under
        the root (dockerd mounts its data root on itself, fuse-overlayfs its layers), the files."""
        subprocess.run(["pkill", "-9", "-f", str(self.root)], check=False)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def shutdown(self) -> None:
        """Restart it if it was killed (so it cleans up its containers), remove every sandbox
        container on it, stop it and purge."""
        import docker

        from sandboxes.reaper import reap

        try:
            if not self.running:
                self.start()
            client = docker.DockerClient(base_url=self.url, timeout=60)
            try:
                reap(client, all_owners=True)
            finally:
                client.close()
        finally:
            self.stop()
            self.purge()
