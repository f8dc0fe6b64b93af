"""One gpustack process per data dir: an OS lock on <data-dir>/gpustack.lock, which holds the owner's pid.

The operating system drops the lock when its process ends, however it ends, so a file left behind by a killed
process never blocks the next start; only a process that is running holds it."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import psutil

from gpustack.utils.os_lock import try_lock, unlock

LOCK_NAME = "gpustack.lock"
# Windows locks byte ranges and a locked range cannot be read, so the lock sits far past the pid it guards.
_WINDOWS_LOCK_OFFSET = 1 << 20
# Values of these flags are not repeated when another process's command line is shown.
_SECRET_FLAGS = ("--token", "-t", "--bootstrap-password", "--database-url")


class DataDirBusy(Exception):
    """Another running process holds the data dir; the message names it."""


def redacted(command: list[str]) -> str:
    """A command line to show in a message, without the secrets it may carry."""
    shown: list[str] = []
    hide_next = False
    for part in command:
        if hide_next:
            shown.append("***")
            hide_next = False
            continue
        name, equals, _ = part.partition("=")
        if name in _SECRET_FLAGS:
            if equals:
                shown.append(f"{name}=***")
            else:
                shown.append(part)
                hide_next = True
            continue
        shown.append(re.sub(r"://[^@/\s]*@", "://***@", part))
    text = " ".join(shown)
    return text if len(text) <= 300 else text[:297] + "..."


def describe_process(pid: int) -> str:
    """'pid 123 (gpustack start --data-dir ...)', or just 'pid 123' when its command line cannot be read."""
    try:
        command = psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return f"pid {pid}"
    return f"pid {pid} ({redacted(command)})" if command else f"pid {pid}"


class DataDirLock:
    """Held while a gpustack process uses a data dir; `acquire` raises DataDirBusy if another holds it."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not try_lock(fd, _WINDOWS_LOCK_OFFSET):
            os.close(fd)
            raise DataDirBusy(
                f"the data dir {self.data_dir} is in use by {self._owner()}; stop that process first, "
                "or give this one another --data-dir"
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Unlock; the file stays (removing it could race with a process that has just opened it)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            unlock(fd, _WINDOWS_LOCK_OFFSET)
        finally:
            os.close(fd)

    def _owner(self) -> str:
        # The owner writes its pid just after locking; a start racing with it may read the file empty.
        for _ in range(20):
            try:
                text = self.path.read_text().strip()
            except OSError:
                text = ""
            if text.isdigit():
                return f"another gpustack process, {describe_process(int(text))}"
            time.sleep(0.05)
        return f"another process (it holds {self.path})"

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
