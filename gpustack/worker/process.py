"""Starting and stopping the worker's child processes (engines, RPC servers): logged, and never orphaned."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM if the worker dies, so no engine is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()


async def start_logged(command: list[str], env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    """Start `command` with stdout and stderr appended to `log_path`, after a line saying what runs."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = await asyncio.to_thread(open, log_path, "ab")
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
