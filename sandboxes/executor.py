"""The one thread pool for blocking work (Docker SDK calls, git, grading) driven from async code.

asyncio's default executor has min(32, cpus + 4) threads (6 on a 2-core machine), which would
cap an async rollout at six concurrent episodes and serialize sandboxes waiting on long
commands. Every async twin in `sandboxes/` and `envs/` runs its blocking call here, so one pool
is sized for dozens of episodes that mostly wait on containers. It is created on first use,
not at import.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

MAX_THREADS = 256

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_lock = threading.Lock()


def blocking_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide pool (threads are started lazily, up to MAX_THREADS)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="agent-rl-blocking")
        return _executor


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on the shared pool, awaited without blocking the running event loop."""
    return await asyncio.get_running_loop().run_in_executor(blocking_executor(), lambda: fn(*args))


__all__ = ["MAX_THREADS", "blocking_executor", "run_blocking"]
