"""An exclusive OS lock on an open file, without blocking: the primitive under the data dir lock and the
workers' shared file locks. The OS drops it when its holder dies, however it dies.

flock, not lockf, on POSIX: it belongs to the open file, so a second open in the same process conflicts
too. Windows locks byte ranges, and a locked range cannot be read: a file whose content matters is locked
at an offset past that content."""

from __future__ import annotations

import os
import sys


def try_lock(fd: int, offset: int = 0) -> bool:
    """Take the lock if it is free; False when another open file holds it."""
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, offset, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unlock(fd: int, offset: int = 0) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, offset, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)
