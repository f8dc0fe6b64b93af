"""A lock shared by processes (gpustack workers on one machine, or one worker's own tasks): an OS lock on a
file, taken without blocking the event loop. The OS drops it when its holder dies, however it dies."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from gpustack.utils.os_lock import try_lock, unlock

POLL_SECONDS = 0.5


class FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    @asynccontextmanager
    async def acquire(self, on_wait: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[None]:
        """Hold the lock for the block; `on_wait` is awaited once if another holder makes it wait."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            waited = False
            while not try_lock(fd):
                if not waited and on_wait is not None:
                    await on_wait()
                waited = True
                await asyncio.sleep(POLL_SECONDS)
            try:
                yield
            finally:
                unlock(fd)
        finally:
            os.close(fd)
