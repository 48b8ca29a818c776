"""Where an episode's containers come from: the agent's workspace and the grader's container.

`EpisodeSandboxes` is the sandbox factory handed to `SWEEnv`. Per task image it keeps two
warm `SandboxPool`s (with `use_pool`): one of workspaces for the agent and one of pristine
containers for the grader, both started from the clean task image and never reused (closing
a sandbox destroys it). Without `use_pool` every sandbox is started on demand, as before.

Several Docker engines (`env.docker_hosts`): each sandbox is placed on the live engine with
the most free capacity (sandboxes/hosts.py), its image copied there first if missing; pools
are per engine. A placement that fails on an engine that no longer answers marks it dead and
tries the next, so new episodes and grades go to the engines that remain.

Ownership: the episode runner (`agent_rl.rollout.runner.EpisodeRunner`) makes one for a whole
run, sizes its pools to the work ahead with `prepare`, and closes it at the end. A standalone
`SWEEnv` makes its own and closes it in `env.close()`.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from envs.tasks import Task
from sandboxes.base import Sandbox
from sandboxes.executor import blocking_executor

if TYPE_CHECKING:
    from sandboxes.docker import DockerSandboxConfig
    from sandboxes.hosts import DockerHost, DockerHosts
    from sandboxes.pool import SandboxPool

log = logging.getLogger(__name__)

SandboxFactory = Callable[[str, Task], Sandbox]

WORKSPACE = "workspace"
GRADER = "grader"
ROLES = (WORKSPACE, GRADER)


class _ClosesInBackground:
    """A sandbox whose `close()` returns at once: the container is destroyed on the shared
    executor, off the episode's and the grade's critical path. It is never handed out again
    either way; the owner waits for every pending removal when it closes."""

    def __init__(self, sandbox: Sandbox, removals: "_Removals") -> None:
        self._sandbox = sandbox
        self._removals = removals
        self._released = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sandbox, name)

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._removals.submit(self._sandbox.close)

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> "_ClosesInBackground":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Removals:
    """Container removals in flight, so that closing the owner can wait for all of them."""

    def __init__(self) -> None:
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()

    def submit(self, close: Callable[[], None]) -> None:
        future = blocking_executor().submit(close)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: "concurrent.futures.Future[None]") -> None:
        with self._lock:
            self._pending.discard(future)
        if future.exception() is not None:  # the label reaper removes what is left
            log.warning("removing a sandbox failed: %s", future.exception())

    def wait(self) -> None:
        with self._lock:
            pending = list(self._pending)
        concurrent.futures.wait(pending)


class EpisodeSandboxes:
    """Workspace and grader sandboxes per task image, pooled or started on demand.

    `workspace` and `grader` are `SandboxFactory` callables (image, task) -> Sandbox. The
    container's workdir follows the task unless the sandbox keys pin it. With
    `background_close` (the episode runner's choice), closing a sandbox they handed out
    returns at once and the container is destroyed in the background; `close()` waits for
    those removals.
    """

    def __init__(
        self,
        sandbox: "DockerSandboxConfig | Mapping[str, Any] | None" = None,
        grading_sandbox: "DockerSandboxConfig | Mapping[str, Any] | None" = None,
        *,
        use_pool: bool = False,
        pool_size: int = 2,  # warm target of a pool made on first use; `prepare` sizes them instead
        max_concurrency: int = 32,
        fill_threads: int = 2,
        background_close: bool = False,
        hosts: "DockerHosts | None" = None,
    ) -> None:
        from sandboxes.docker import DockerSandboxConfig

        # Validated now, so that a bad key fails at construction, not at the first reset or grade.
        self._configs = {
            WORKSPACE: DockerSandboxConfig.from_config(sandbox, "env.sandbox"),
            GRADER: DockerSandboxConfig.from_config(grading_sandbox, "env.grading.sandbox"),
        }
        self.use_pool = use_pool
        self.pool_size = pool_size
        self.max_concurrency = max_concurrency
        self.fill_threads = fill_threads
        self.hosts = hosts  # None: the local engine (default_client), as always
        if hosts is not None:
            hosts.reap_leaked()  # once per run, on every engine, not once per pool
        self._pools: dict[tuple[str, str, str, str], "SandboxPool"] = {}
        self._lock = threading.Lock()
        self._unpooled_starts = 0
        self._removals = _Removals() if background_close else None
        self._closed = False

    @classmethod
    def for_env(cls, config: Any, **kwargs: Any) -> "EpisodeSandboxes":
        """From an `EnvConfig` (its sandbox keys, grading sandbox keys, use_pool and pool_size);
        `kwargs` override the rest."""
        params = {"use_pool": config.use_pool, "pool_size": config.pool_size, **kwargs}
        if getattr(config, "docker_hosts", None) and "hosts" not in params:
            from sandboxes.hosts import DockerHosts

            params["hosts"] = DockerHosts(config.docker_hosts)
        return cls(config.sandbox, config.grading.sandbox, **params)

    # ------------------------------------------------------------------ the factories

    def workspace(self, image: str, task: Task) -> Sandbox:
        """A started sandbox for the agent (no hidden tests in it). Close it when done."""
        return self._sandbox(WORKSPACE, image, task)

    def grader(self, image: str, task: Task) -> Sandbox:
        """A pristine, never-used container from the clean image, for one grade. Close it when done."""
        return self._sandbox(GRADER, image, task)

    def _sandbox(self, role: str, image: str, task: Task) -> Sandbox:
        if self._closed:
            from sandboxes.pool import PoolClosed

            raise PoolClosed("the episode sandboxes were closed")
        if self.hosts is not None:
            sandbox: Sandbox = self._placed(role, image, task)
        else:
            sandbox = self._start(role, image, task, None)
        if self._removals is None:
            return sandbox
        return _ClosesInBackground(sandbox, self._removals)  # type: ignore[return-value]

    def _start(self, role: str, image: str, task: Task, host: "DockerHost | None") -> Sandbox:
        if self.use_pool:
            return self._pool(role, image, task, self.pool_size, host).acquire()
        from sandboxes.docker import DockerSandbox

        sandbox = DockerSandbox(image, self._config(role, task), client=host.client if host is not None else None)
        with self._lock:
            self._unpooled_starts += 1
        return sandbox

    def _placed(self, role: str, image: str, task: Task) -> Sandbox:
        """A sandbox on the live host with the most room; a host that fails and no longer
        answers is marked dead and the next one is tried."""
        from sandboxes.hosts import NoLiveHost

        assert self.hosts is not None
        last_error: BaseException | None = None
        for _ in range(len(self.hosts.hosts)):
            host = self.hosts.place()
            try:
                self.hosts.ensure_image(host, image)
                sandbox = self._start(role, image, task, host)
            except Exception as exc:
                self.hosts.release(host)
                if host.ping():
                    raise  # the engine is fine: the failure is this sandbox's own
                self.hosts.mark_dead(host, f"{type(exc).__name__}: {exc}")
                self._drop_pools(host)
                last_error = exc
                continue
            sandbox.add_close_callback(lambda _sandbox, h=host: self.hosts.release(h))  # type: ignore[attr-defined, union-attr]
            return sandbox
        raise NoLiveHost(f"no Docker host could start a sandbox from {image!r}") from last_error

    def _drop_pools(self, host: "DockerHost") -> None:
        """Forget a dead host's pools (closing them frees what can still be freed)."""
        with self._lock:
            gone = [key for key in self._pools if key[3] == host.name]
            pools = [self._pools.pop(key) for key in gone]
        for pool in pools:
            try:
                pool.close()
            except Exception as exc:  # its engine is gone; the reaper cleans up if it comes back
                log.warning("closing a pool on dead host %s: %s", host.name, exc)

    def _config(self, role: str, task: Task) -> "DockerSandboxConfig":
        return self._configs[role].for_task_workdir(task.workdir)

    def _pool(self, role: str, image: str, task: Task, size: int, host: "DockerHost | None" = None) -> "SandboxPool":
        config = self._config(role, task)
        key = (role, image, config.workdir, host.name if host is not None else "")
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                from sandboxes.pool import SandboxPool

                # Reaping leaked containers is a once-per-process job; doing it per pool would
                # list every container on the engine at each new image (DockerHosts reaps
                # every engine once, at construction).
                pool = SandboxPool(image, config, size=size, max_concurrency=self.max_concurrency,
                                   fill_threads=self.fill_threads, reap_leaked=host is None and not self._pools,
                                   client=host.client if host is not None else None)
                self._pools[key] = pool
            return pool

    # ------------------------------------------------------------------ sizing

    def prepare(self, demand: Iterable[tuple[str, Task, int]]) -> None:
        """Size the pools to the work ahead: (image, task, episodes) per image.

        Each image's workspace and grader pools keep as many warm as it has episodes, in
        order, until `max_concurrency` (the run's concurrency) is given out per role. Pools of
        images not in `demand` shrink to nothing (their containers are destroyed; the pool
        stays for a later batch). Returns at once: the pools fill in the background. No-op
        without `use_pool`.
        """
        if not self.use_pool or self._closed:
            return
        wanted: dict[tuple[str, str, str, str], int] = {}
        budget = {role: self.max_concurrency for role in ROLES}  # warm containers in all, per role
        # Several hosts: each image's episodes are split evenly over the live ones.
        targets: list[Any] = [None] if self.hosts is None else self.hosts.alive()
        for image, task, episodes in demand:
            for i, host in enumerate(targets):
                share = episodes // len(targets) + (1 if i < episodes % len(targets) else 0)
                if host is not None and share:
                    self.hosts.ensure_image(host, image)  # type: ignore[union-attr]
                for role in ROLES:
                    pool = self._pool(role, image, task, 0, host)
                    key = (role, image, pool.config.workdir, host.name if host is not None else "")
                    grant = min(budget[role], share)
                    wanted[key] = wanted.get(key, 0) + grant
                    budget[role] -= grant
        with self._lock:
            pools = dict(self._pools)
        for key, pool in pools.items():
            pool.resize(wanted.get(key, 0))

    def wait_warm(self, timeout: float = 120.0) -> bool:
        """Block until every pool holds its warm target; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pools = list(self._pools.values())
        return all(pool.wait_warm(timeout=max(0.0, deadline - time.monotonic())) for pool in pools)

    def stats(self) -> dict[str, int]:
        """Container counters: `started` in all, `cold_starts` (started while an episode or a
        grade waited: on the critical path), `warm` now, `pools`."""
        with self._lock:
            pools = list(self._pools.values())
            unpooled = self._unpooled_starts
        totals = {"started": unpooled, "cold_starts": unpooled, "warm": 0, "pools": len(pools)}
        for pool in pools:
            for name, value in pool.stats().items():
                totals[name] += value
        return totals

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Destroy every warm container and stop refilling (checked-out sandboxes stay with their users)."""
        self._closed = True
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
        if self._removals is not None:
            self._removals.wait()
        if self.hosts is not None:
            self.hosts.close()

    def __enter__(self) -> "EpisodeSandboxes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["EpisodeSandboxes", "GRADER", "SandboxFactory", "WORKSPACE"]
