"""Starting and stopping the worker's child processes (engines, RPC servers): logged, and never orphaned."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from gpustack.worker.spawn import spawn_plan


def open_private_log(log_path: Path) -> BinaryIO:
    """Open a log for appending, readable by its owner only: engine logs echo prompts and request data.

    A log left by an older version with mode 0644 is made 0600 as it is reopened."""
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if os.name != "nt":
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def keep_previous_log(log_path: Path) -> None:
    """Move the previous run's log aside to <name>.1 (replacing an older one), so a run starts a fresh log
    and the one before it stays readable after a restart."""
    try:
        os.replace(log_path, log_path.with_name(log_path.name + ".1"))
    except FileNotFoundError:
        pass


async def start_logged(command: list[str], env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    """Start `command` with stdout and stderr appended to `log_path`, after a line saying what runs."""
    log = await asyncio.to_thread(open_private_log, log_path)
    with log:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.write(f"==== {stamp} gpustack starts: {' '.join(command)}\n".encode())
        log.flush()
        plan = await asyncio.to_thread(spawn_plan, command)
        return await asyncio.create_subprocess_exec(
            *plan.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            **plan.options,
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


def kill_group(pid: int) -> None:
    """SIGKILL whatever is left of a child's process group (the child leads its own, worker/spawn.py): an
    engine's own children outlive it when it is killed (vLLM's engine core and worker processes, with
    their memory), and must not outlive it into the next run."""
    if hasattr(os, "killpg"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
