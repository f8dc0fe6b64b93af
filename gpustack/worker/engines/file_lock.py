"""A lock shared by processes (gpustack workers on one machine, or one worker's own tasks): an OS lock on a
file, taken without blocking the event loop. The OS drops it when its holder dies, however it dies."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

POLL_SECONDS = 0.5


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        # flock belongs to the open file: a second open in the same process waits too.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


class FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    @asynccontextmanager
    async def acquire(self, on_wait: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[None]:
        """Hold the lock for the block; `on_wait` is awaited once if another holder makes it wait."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            waited = False
            while not _try_lock(fd):
                if not waited and on_wait is not None:
                    await on_wait()
                waited = True
                await asyncio.sleep(POLL_SECONDS)
            try:
                yield
            finally:
                _unlock(fd)
        finally:
            os.close(fd)
