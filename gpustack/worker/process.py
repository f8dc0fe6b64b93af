"""Starting and stopping the worker's child processes (engines, RPC servers): logged, and never orphaned."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM if the worker dies, so no engine is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()


def open_private_log(log_path: Path) -> BinaryIO:
    """Open a log for appending, readable by its owner only: engine logs echo prompts and request data.

    A log left by an older version with mode 0644 is made 0600 as it is reopened."""
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if os.name != "nt":
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


async def start_logged(command: list[str], env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    """Start `command` with stdout and stderr appended to `log_path`, after a line saying what runs."""
    log = await asyncio.to_thread(open_private_log, log_path)
    with log:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.write(f"==== {stamp} gpustack starts: {' '.join(command)}\n".encode())
        log.flush()
        return await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if os.name != "nt" else None,
        )


async def terminate(process: asyncio.subprocess.Process | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; returns once the process is gone."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), grace)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
