"""Warm pools of sandbox containers.

Starting a hardened container takes hundreds of milliseconds; an episode should not wait
for it. `SandboxPool` keeps `size` started containers per image and hands them out. A
sandbox is never reused: closing it (or leaving its `with` block) destroys the container,
so no files or processes leak from one episode into the next, and background threads start
replacements. `max_concurrency` bounds how many are checked out at once; `resize` moves the
warm target while the pool runs.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Mapping

from sandboxes.base import SandboxDied, SandboxError
from sandboxes.docker import DockerSandbox, DockerSandboxConfig, default_client
from sandboxes.executor import run_blocking
from sandboxes.reaper import reap

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)


class PoolClosed(SandboxError):
    """The pool was closed; it hands out nothing more."""


class SandboxPool:
    """Pre-started `DockerSandbox`es for one image and config.

    `size` is the warm target; `resize` changes it while the pool runs (the owner sizes it
    to the work ahead). `stats()` counts the containers started, and how many of those an
    `acquire` had to start itself because none was warm: those are on the caller's critical
    path, the ones the background fillers start are not.
    """

    def __init__(self, image: str, config: DockerSandboxConfig | Mapping[str, Any] | None = None, *,
                 size: int = 4, max_concurrency: int = 32, fill_threads: int = 2,
                 client: "docker.DockerClient | None" = None, reap_leaked: bool = True):
        if size < 0 or max_concurrency < 1 or fill_threads < 1:
            raise ValueError(f"need size >= 0, max_concurrency >= 1, fill_threads >= 1 "
                             f"(got {size}, {max_concurrency}, {fill_threads})")
        self.image = image
        self.config = config if isinstance(config, DockerSandboxConfig) else DockerSandboxConfig.from_config(config)
        self.size = size
        self.max_concurrency = max_concurrency
        self._client = client or default_client()
        self._ready: queue.Queue[DockerSandbox] = queue.Queue()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._state = threading.Condition()  # guards size, _starting and the counters
        self._starting = 0  # containers the fillers are starting right now
        self._started = 0  # all containers this pool started
        self._cold = 0  # of those, started inside acquire() because none was warm
        self._closed = threading.Event()
        self._last_error: BaseException | None = None
        self._fill_threads = fill_threads
        self._fillers: list[threading.Thread] = []
        if reap_leaked:
            reap(self._client)
        if size:
            self._start_fillers()

    # ------------------------------------------------------------------ background refill

    def _start_fillers(self) -> None:
        # Threads only once there is something to keep warm (a size-0 pool has none).
        for i in range(self._fill_threads):
            thread = threading.Thread(target=self._fill, name=f"sandbox-pool-fill-{i}", daemon=True)
            self._fillers.append(thread)
            thread.start()

    def _claim_fill(self) -> bool:
        """Reserve one container to start, if the pool is below its warm target."""
        with self._state:
            if self._closed.is_set() or self._ready.qsize() + self._starting >= self.size:
                self._state.wait(timeout=0.2)
                return False
            self._starting += 1
            return True

    def _fill(self) -> None:
        while not self._closed.is_set():
            if not self._claim_fill():
                continue
            try:
                sandbox = self._start()
            except Exception as exc:  # keep filling; acquire() reports the error if nothing comes
                self._last_error = exc
                log.warning("sandbox pool could not start a container from %s: %s", self.image, exc)
                with self._state:
                    self._starting -= 1
                self._closed.wait(2.0)
                continue
            with self._state:
                self._starting -= 1
                self._started += 1
                # A resize() down while this one was starting makes it surplus.
                keep = not self._closed.is_set() and self._ready.qsize() < self.size
                if keep:
                    self._ready.put(sandbox)
            if not keep:
                sandbox.close()

    def _start(self) -> DockerSandbox:
        return DockerSandbox(self.image, self.config, client=self._client)

    def resize(self, size: int) -> None:
        """Set the warm target: fillers start what is missing, surplus warm sandboxes are destroyed."""
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        surplus: list[DockerSandbox] = []
        with self._state:
            self.size = size
            while self._ready.qsize() > size:
                surplus.append(self._ready.get_nowait())
            self._state.notify_all()
            need_threads = size and not self._fillers and not self._closed.is_set()
        if need_threads:
            self._start_fillers()
        for sandbox in surplus:
            sandbox.close()

    def stats(self) -> dict[str, int]:
        """Counters: `started` containers in all, `cold_starts` of them inside acquire(), `warm` now."""
        with self._state:
            return {"started": self._started, "cold_starts": self._cold, "warm": self._ready.qsize()}

    # ------------------------------------------------------------------ hand-out

    def acquire(self, timeout: float | None = None) -> DockerSandbox:
        """A started sandbox; close it when done (that frees the slot and destroys it)."""
        if self._closed.is_set():
            raise PoolClosed("sandbox pool is closed")
        # Semaphore.acquire waits forever only with timeout=None (-1 would mean "do not wait").
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"no sandbox slot free within {timeout}s (max_concurrency reached)")
        try:
            sandbox = self._take_ready() or self._cold_start()
        except BaseException:
            self._slots.release()
            raise
        sandbox.add_close_callback(lambda _: self._slots.release())
        return sandbox

    def _cold_start(self) -> DockerSandbox:
        sandbox = self._start()
        with self._state:
            self._started += 1
            self._cold += 1
        return sandbox

    def _take_ready(self) -> DockerSandbox | None:
        """A warm sandbox that still answers, or None when none is warm (caller starts one)."""
        while True:
            with self._state:
                try:
                    sandbox = self._ready.get_nowait()
                except queue.Empty:
                    return None
                self._state.notify_all()  # a replacement starts in the background
            try:
                sandbox.ping()
                return sandbox
            except SandboxDied:
                sandbox.close()  # died while idle: drop it, try the next one

    async def aacquire(self, timeout: float | None = None) -> DockerSandbox:
        return await run_blocking(self.acquire, timeout)

    @contextlib.contextmanager
    def sandbox(self, timeout: float | None = None) -> Iterator[DockerSandbox]:
        sandbox = self.acquire(timeout)
        try:
            yield sandbox
        finally:
            sandbox.close()

    @contextlib.asynccontextmanager
    async def asandbox(self, timeout: float | None = None) -> AsyncIterator[DockerSandbox]:
        sandbox = await self.aacquire(timeout)
        try:
            yield sandbox
        finally:
            await sandbox.aclose()

    def warm_count(self) -> int:
        return self._ready.qsize()

    def wait_warm(self, count: int | None = None, timeout: float = 120.0) -> bool:
        """Block until `count` (default: size) sandboxes are warm; False on timeout."""
        target = self.size if count is None else count
        deadline = time.monotonic() + timeout
        while self._ready.qsize() < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Stop refilling and destroy the warm sandboxes (checked-out ones stay with their users)."""
        with self._state:
            self._closed.set()
            self._state.notify_all()
        for thread in self._fillers:
            thread.join(timeout=120)
        while True:
            try:
                self._ready.get_nowait().close()
            except queue.Empty:
                break

    async def aclose(self) -> None:
        await run_blocking(self.close)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "SandboxPool":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["PoolClosed", "SandboxPool"]
