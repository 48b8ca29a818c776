"""Run blocking calls (Docker SDK, git) from async code without starving the event loop.

asyncio's default executor has min(32, cpus + 4) threads (6 on a 2-core machine), which
would cap an async rollout at six concurrent episodes. Our own pool is sized for dozens of
episodes that mostly wait on containers, and is created on first use, not at import.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

MAX_THREADS = 128

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="agent-rl-env")
        return _executor


async def run_blocking(fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(_pool(), fn)
