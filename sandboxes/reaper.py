"""Remove sandbox containers whose owning process is gone.

Every sandbox container carries `agent-rl.owner-pid` and `agent-rl.owner-host` labels. A
process that was SIGKILLed never ran its cleanup, so its containers linger (stopped: the
command server exits when the owner's attach socket closes). `reap` finds them by label.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from sandboxes.deployment import CREATED_LABEL, KIND_LABEL, MANAGED_LABEL, OWNER_HOST_LABEL, OWNER_PID_LABEL

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)


def _process_start_time(pid: int) -> float | None:
    """Unix time `pid` started, or None if no such process (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith("btime"))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: starttime


def owner_alive(pid: int, container_created: float | None) -> bool:
    """Is the process that created a container still running? A pid reused by a process
    that started after the container was created does not count."""
    if pid == os.getpid():
        return True
    started = _process_start_time(pid)
    if started is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True  # exists, but no /proc to date it: assume alive
    return container_created is None or started <= container_created + 1.0


def reap(client: "docker.DockerClient | None" = None, *, all_owners: bool = False) -> list[str]:
    """Remove managed sandbox containers whose owner on this host is dead; return their ids.

    `all_owners=True` removes every managed sandbox container, whoever owns it.
    """
    if client is None:
        import docker

        client = docker.from_env()
    import docker.errors

    host = socket.gethostname()
    removed = []
    # Only sandbox containers: build steps inherit `agent-rl.managed` from our images' labels
    # and must not be touched, even with all_owners.
    # ignore_removed: containers that other processes remove between the listing and the
    # per-container inspect that docker-py does would otherwise raise NotFound.
    sandboxes = client.containers.list(all=True, ignore_removed=True,
                                       filters={"label": [f"{MANAGED_LABEL}=1", f"{KIND_LABEL}=sandbox"]})
    for container in sandboxes:
        labels = container.labels or {}
        if not all_owners:
            if labels.get(OWNER_HOST_LABEL) != host or OWNER_PID_LABEL not in labels:
                continue
            try:
                pid = int(labels[OWNER_PID_LABEL])
                created = float(labels[CREATED_LABEL]) if CREATED_LABEL in labels else None
            except ValueError:
                continue
            if owner_alive(pid, created):
                continue
        try:
            container.remove(force=True, v=True)
            removed.append(container.id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("could not remove leaked sandbox %s: %s", container.short_id, exc)
    if removed:
        log.info("reaped %d leaked sandbox container(s)", len(removed))
    return removed
