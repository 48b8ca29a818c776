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


class ExtraDockerd:
    def __init__(self, storage_driver: str) -> None:
        # A short path: unix socket paths are limited to about 100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="ar-d2-", dir="/tmp"))
        self.url = f"unix://{self.root}/docker.sock"
        self.config = self.root / "daemon.json"
        self.config.write_text(json.dumps({
            "data-root": str(self.root / "data"), "exec-root": str(self.root / "exec"),
            "pidfile": str(self.root / "docker.pid"), "hosts": [self.url], "storage-driver": storage_driver,
            "iptables": False, "ip-masq": False,
        }))
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_main_engine(cls) -> "ExtraDockerd":
        """One with the storage driver the local engine uses (what works on this kernel)."""
        import docker

        if shutil.which("dockerd") is None or shutil.which("unshare") is None or os.geteuid() != 0:
            raise RuntimeError("an extra Docker engine needs the dockerd and unshare binaries and root")
        client = docker.from_env()
        try:
            return cls(client.info()["Driver"])
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
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the extra dockerd did not come up:\n"
                                       + (self.root / "dockerd.log").read_text(errors="replace")[-3000:])
                time.sleep(0.5)

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
