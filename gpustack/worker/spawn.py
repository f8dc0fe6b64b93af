"""How the worker starts a child (an engine, an RPC server): in a process group of its own, at a lower CPU
priority than gpustack itself, and, on Linux, killed (SIGKILL) when the worker dies; without holding up
the event loop.

SIGKILL, not SIGTERM: an engine whose worker is gone has no one to supervise it, and a graceful stop can
hang. llama.cpp's server, sent SIGTERM, stops answering but keeps its connections open, so a request in
flight waited until its client gave up (80-120 s in bench/chaos.py) while a new engine of the same instance
started beside the old one and held its memory twice. Killed, its sockets close at once and the gateway
moves on to another replica.

Python code in the child (Popen's preexec_fn) makes Popen fork the whole worker and then wait, on the
event loop, until the child has run it and exec'd: measured 22-30 ms a start on an idle 2-core host and
~300 ms on a busy one (bench/spawn_stall.py), so 64 engines starting froze the server for seconds.
util-linux's setpriv sets the parent-death signal in C after a vfork instead (2 ms a start);
preexec_fn remains only where nothing else can do it.

Engines run at nice ENGINE_NICENESS: when they want more CPU than the host has (64 engines loading on
2 cores, bench/many_engines.py), the server, the worker and their health checks still get theirs.
Without it, heartbeats and state reports waited past their deadlines, the worker was declared not
ready, and every instance was placed and started again, three times over; at nice 10 none of that
happened. While the CPU is not contended, the priority changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

ENGINE_NICENESS = 10


@dataclass(frozen=True)
class SpawnPlan:
    argv: list[str]
    options: dict[str, Any] = field(default_factory=dict)  # for Popen / asyncio.create_subprocess_exec


def die_with_parent() -> None:
    """In the child before exec, where nothing else can: SIGKILL when the worker dies (Linux), its own
    process group, and a lower priority."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgrp()
    with contextlib.suppress(OSError):
        os.nice(ENGINE_NICENESS)


@functools.cache
def setpriv() -> str | None:
    """util-linux's setpriv, if it can set the parent-death signal (2.33 and later)."""
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        usage = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "--pdeathsig" in usage else None


@functools.cache
def _nice() -> list[str]:
    path = shutil.which("nice")
    return [path, "-n", str(ENGINE_NICENESS)] if path else []


def spawn_plan(command: list[str]) -> SpawnPlan:
    """How to start `command`. The first call may look up setpriv and nice: call it off the loop."""
    if os.name == "nt":
        return SpawnPlan(command)
    if sys.version_info >= (3, 11):  # Popen's process_group
        if not sys.platform.startswith("linux"):
            return SpawnPlan([*_nice(), *command], {"process_group": 0})
        wrapper = setpriv()
        if wrapper is not None:
            # setpriv and nice each exec the next: the engine keeps the pid, and the signal survives exec.
            argv = [wrapper, "--pdeathsig", "KILL", "--", *_nice(), *command]
            return SpawnPlan(argv, {"process_group": 0})
    return SpawnPlan(command, {"preexec_fn": die_with_parent})
