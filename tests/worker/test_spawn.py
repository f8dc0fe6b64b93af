"""Engines start without Python code between fork and exec (which held the event loop for each start),
and still in a process group of their own that dies with the worker, below gpustack's CPU priority."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gpustack.worker.spawn import ENGINE_NICENESS, setpriv, spawn_plan

linux_with_setpriv = pytest.mark.skipif(
    not sys.platform.startswith("linux") or sys.version_info < (3, 11) or setpriv() is None,
    reason="needs Linux, Python 3.11 and util-linux's setpriv",
)


@linux_with_setpriv
def test_engines_start_without_python_code_in_the_child() -> None:
    plan = spawn_plan(["/bin/engine", "--port", "1"])
    assert "preexec_fn" not in plan.options  # it forces a fork of the whole worker, waited for on the loop
    assert plan.options == {"process_group": 0}
    assert plan.argv[:4] == [setpriv(), "--pdeathsig", "KILL", "--"]
    assert plan.argv[-3:] == ["/bin/engine", "--port", "1"]


def _state(pid: int) -> str | None:
    """The process's state letter (Z for a zombie), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _program(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]


@linux_with_setpriv
def test_an_engine_dies_with_its_worker_even_if_it_ignores_sigterm_and_has_its_own_process_group(
    tmp_path: Path,
) -> None:
    worker = textwrap.dedent(
        f"""
        import asyncio, pathlib, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from gpustack.worker.process import start_logged

        async def main():
            log = pathlib.Path({str(tmp_path / "e.log")!r})
            # An engine that does not stop on SIGTERM (llama.cpp's server hangs on to its connections).
            command = ["sh", "-c", "trap '' TERM; exec sleep 300"]
            engine = await start_logged(command, {{"PATH": "/usr/bin:/bin"}}, log)
            print(engine.pid, flush=True)
            await asyncio.sleep(300)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", worker], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    engine = int(parent.stdout.readline())
    try:
        assert os.getpgid(engine) == engine  # its own group: stopping it stops whatever it started
        assert "exec sleep 300" in (tmp_path / "e.log").read_text()  # the engine's command, not the wrapper
        deadline = time.monotonic() + 10
        while _program(engine) != b"sleep" and time.monotonic() < deadline:
            time.sleep(0.01)  # setpriv, then the engine itself under the same pid
        assert _program(engine) == b"sleep"
        # Below gpustack's priority: engines that want more CPU than there is cannot starve the server.
        assert os.getpriority(os.PRIO_PROCESS, engine) == os.getpriority(os.PRIO_PROCESS, 0) + ENGINE_NICENESS
        parent.send_signal(signal.SIGKILL)  # the worker crashes
        parent.wait()
        deadline = time.monotonic() + 10
        while _state(engine) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(engine) in (None, "Z"), "the engine outlived its worker"
    finally:
        if _state(engine) not in (None, "Z"):
            os.kill(engine, signal.SIGKILL)
