"""The data dir and log dir on disk: private to their owner, and writable, checked before anything starts."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# Windows has no POSIX modes; %APPDATA% is private to the user already.
_POSIX = os.name != "nt"


class StorageError(Exception):
    """A directory or file gpustack needs cannot be used; the message says which and what to do."""


def _tighten(path: Path, mode: int, what: str) -> None:
    """Take away any permission beyond `mode`, saying so: a data dir made by an older version was 0755."""
    if not _POSIX:
        return
    current = path.stat().st_mode & 0o777
    if current & ~mode:
        path.chmod(current & mode)
        logger.warning(
            "%s %s was readable by other users (%s); changed it to %s", what, path, oct(current), oct(mode)
        )


def private_dir(path: Path, what: str, flag: str) -> None:
    """Create `path` (mode 0700), or take away the group's and others' access to an existing one."""
    try:
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        _tighten(path, PRIVATE_DIR, what)
    except OSError as exc:
        raise _failure(flag, path, "cannot create or use it", exc) from None


def private_file(path: Path, what: str, flag: str) -> None:
    """Create an empty `path` with mode 0600, or make an existing one 0600, and check it can be written.

    SQLite gives the -wal and -shm files it creates the database file's mode, so a database created here
    keeps its journal private too."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        os.close(fd)
        _tighten(path, PRIVATE_FILE, what)
        for suffix in ("-wal", "-shm", "-journal"):
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                _tighten(companion, PRIVATE_FILE, what)
    except OSError as exc:
        raise _failure(flag, path, "cannot write it", exc) from None


def require_writable(path: Path, flag: str) -> None:
    """Write and remove a small file in `path`: a read-only mount, an immutable directory or a full disk
    fail here, with a message, rather than at the first write after the server said it was ready."""
    probe = path / f".gpustack-write-check-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    except OSError as exc:
        raise _failure(flag, path, "cannot write in it", exc) from None
    try:
        os.write(fd, b"gpustack write check\n")
    except OSError as exc:
        raise _failure(flag, path, "cannot write in it", exc) from None
    finally:
        os.close(fd)
        try:
            probe.unlink()
        except OSError as exc:
            logger.warning("could not remove the write check %s: %s", probe, _reason(exc))


def prepare_data_dir(data_dir: str, log_dir: str, cache_dir: str, database_file: Path | None) -> None:
    """Everything gpustack keeps on disk, before it starts: the data dir and log dir private (they hold the
    cluster token, session secret, database and engine logs, which echo prompts), all of them writable, and
    a SQLite database file created 0600 before SQLite makes it with the default mode."""
    data, log = Path(data_dir), Path(log_dir)
    private_dir(data, "the data dir", "--data-dir")
    require_writable(data, "--data-dir")
    # A --log-dir of the user's own outside the data dir (it may be shared) keeps its mode: the engine logs
    # in it and their folders are private anyway (worker/process.py).
    if log.is_relative_to(data) or not log.exists():
        private_dir(log, "the log dir", "--log-dir")
    require_writable(log, "--log-dir")
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _failure("--cache-dir", cache_dir, "cannot create it", exc) from None
    require_writable(Path(cache_dir), "--cache-dir")
    if database_file is not None:
        # A directory of the user's choosing is created private if missing, but not changed if it exists.
        if not database_file.parent.exists():
            private_dir(database_file.parent, "the database's directory", "--database-url")
        # SQLite creates its -wal and -shm beside the database.
        require_writable(database_file.parent, "--database-url")
        private_file(database_file, "the database", "--database-url")


def _failure(flag: str, path: Path | str, what: str, exc: OSError) -> StorageError:
    return StorageError(f"{flag} {path}: {what} ({_reason(exc)}); {_advice(exc)}")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _advice(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "free some space on that disk and start again"
    if exc.errno == errno.EROFS:
        return "remount it read-write or choose another directory"
    return "make it writable by this user or choose another directory"
