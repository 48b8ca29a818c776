"""Warm pools of sandbox containers.

Starting a hardened container takes hundreds of milliseconds; an episode should not wait
for it. `SandboxPool` keeps `size` started containers per image and hands them out. A
sandbox is never reused: closing it (or leaving its `with` block) destroys the container,
so no files or processes leak from one episode into the next, and background threads start
replacements. `max_concurrency` bounds how many are checked out at once.
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
from sandboxes.fastexec import run_blocking
from sandboxes.reaper import reap

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)


class PoolClosed(SandboxError):
    """The pool was closed; it hands out nothing more."""


class SandboxPool:
    """Pre-started `DockerSandbox`es for one image and config."""

    def __init__(self, image: str, config: DockerSandboxConfig | Mapping[str, Any] | None = None, *,
                 size: int = 4, max_concurrency: int = 32, fill_threads: int = 2,
                 client: "docker.DockerClient | None" = None, reap_leaked: bool = True):
        if size < 0 or max_concurrency < 1 or fill_threads < 1:
            raise ValueError(f"need size >= 0, max_concurrency >= 1, fill_threads >= 1 "
                             f"(got {size}, {max_concurrency}, {fill_threads})")
        self.image = image
        self.config = config if isinstance(config, DockerSandboxConfig) else DockerSandboxConfig.from_config(config)
        self.size = size
        self._client = client or default_client()
        self._ready: queue.Queue[DockerSandbox] = queue.Queue()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._wanted = threading.Semaphore(size)  # one token per container the fillers should start
        self._closed = threading.Event()
        self._last_error: BaseException | None = None
        if reap_leaked:
            reap(self._client)
        self._fillers = [
            threading.Thread(target=self._fill, name=f"sandbox-pool-fill-{i}", daemon=True)
            for i in range(fill_threads if size else 0)
        ]
        for thread in self._fillers:
            thread.start()

    # ------------------------------------------------------------------ background refill

    def _fill(self) -> None:
        while not self._closed.is_set():
            if not self._wanted.acquire(timeout=0.2):
                continue
            try:
                sandbox = self._start()
            except Exception as exc:  # keep filling; acquire() reports the error if nothing comes
                self._last_error = exc
                log.warning("sandbox pool could not start a container from %s: %s", self.image, exc)
                self._wanted.release()
                self._closed.wait(2.0)
                continue
            if self._closed.is_set():
                sandbox.close()
                return
            self._ready.put(sandbox)

    def _start(self) -> DockerSandbox:
        return DockerSandbox(self.image, self.config, client=self._client)

    # ------------------------------------------------------------------ hand-out

    def acquire(self, timeout: float | None = None) -> DockerSandbox:
        """A started sandbox; close it when done (that frees the slot and destroys it)."""
        if self._closed.is_set():
            raise PoolClosed("sandbox pool is closed")
        if not self._slots.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"no sandbox slot free within {timeout}s (max_concurrency reached)")
        try:
            sandbox = self._take_ready() or self._start()
        except BaseException:
            self._slots.release()
            raise
        sandbox.add_close_callback(lambda _: self._slots.release())
        return sandbox

    def _take_ready(self) -> DockerSandbox | None:
        """A warm sandbox that still answers, or None when none is warm (caller starts one)."""
        while True:
            try:
                sandbox = self._ready.get_nowait()
            except queue.Empty:
                return None
            self._wanted.release()  # a replacement starts in the background
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
        self._closed.set()
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
