"""How the worker starts a child so that it has a process group of its own and, on Linux, gets SIGTERM
when the worker dies, without holding up the event loop.

Python code in the child (Popen's preexec_fn) makes Popen fork the whole worker and then wait, on the
event loop, until the child has run it and exec'd: measured 17 ms a start on an idle 2-core host and
150 ms on a busy one (bench/spawn_stall.py), so 64 engines starting froze the server for seconds. util-linux's
setpriv sets the parent-death signal in C after a vfork instead (1-8 ms a start); preexec_fn remains
only where nothing else can do it.
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


@dataclass(frozen=True)
class SpawnPlan:
    argv: list[str]
    options: dict[str, Any] = field(default_factory=dict)  # for Popen / asyncio.create_subprocess_exec


def die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM if the worker dies, so no engine is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()


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


def spawn_plan(command: list[str]) -> SpawnPlan:
    """How to start `command`. The first call on Linux may run `setpriv --help`: call it off the loop."""
    if os.name == "nt":
        return SpawnPlan(command)
    if sys.version_info >= (3, 11):  # Popen's process_group
        if not sys.platform.startswith("linux"):
            return SpawnPlan(command, {"process_group": 0})
        wrapper = setpriv()
        if wrapper is not None:
            # setpriv execs the command itself: the engine keeps its pid, and the signal survives exec.
            return SpawnPlan([wrapper, "--pdeathsig", "TERM", "--", *command], {"process_group": 0})
    return SpawnPlan(command, {"preexec_fn": die_with_parent})
