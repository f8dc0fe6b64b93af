"""The server's embedded worker in a process of its own, so that gateway traffic on the server's event
loop can never delay its heartbeats, engine supervision or proxying (and the two use two cores).

The server process starts it (multiprocessing, spawn: nothing of the server's state is inherited, and
the cluster token travels through the pipe, not the command line), restarts it with backoff if it dies,
and stops it with the server. The child dies with the server: on Linux by the parent-death signal,
elsewhere by watching its parent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.process import BaseProcess

from gpustack.config import Config

logger = logging.getLogger(__name__)

_RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
_STOP_SECONDS = 20.0


def _die_with(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # the parent died before the line above
            os._exit(0)
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child(config: Config, server_url: str, token: str, parent_pid: int) -> None:
    """The worker process: the same worker a joining machine runs, against the local server."""
    _die_with(parent_pid)
    from gpustack.log import setup_logging
    from gpustack.worker.agent import Worker

    setup_logging(config.debug)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await Worker(config, server_url, token).run(stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


class EmbeddedWorker:
    def __init__(self, config: Config, server_url: str, token: str) -> None:
        self.config = config
        self.server_url = server_url
        self.token = token
        self.process: BaseProcess | None = None

    def _start(self) -> BaseProcess:
        # Started from the event loop's thread: the parent-death signal follows the thread that forks.
        process = multiprocessing.get_context("spawn").Process(
            target=_child,
            args=(self.config, self.server_url, self.token, os.getpid()),
            name="gpustack-worker",
            daemon=False,
        )
        process.start()
        logger.info("embedded worker started (pid %s)", process.pid)
        return process

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        try:
            while not stop.is_set():
                self.process = process = self._start()
                started = time.monotonic()
                while process.is_alive() and not stop.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
                if stop.is_set():
                    break
                # It died on its own: restart it, more slowly if it keeps dying at once.
                failures = 0 if time.monotonic() - started > 60 else failures + 1
                delay = _RESTART_DELAYS[min(failures, len(_RESTART_DELAYS) - 1)]
                logger.warning(
                    "embedded worker (pid %s) exited with code %s; starting it again in %.0fs",
                    process.pid,
                    process.exitcode,
                    delay,
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self._stop()

    async def _stop(self) -> None:
        process = self.process
        if process is None or not process.is_alive():
            return
        process.terminate()  # SIGTERM: the worker stops its engines and exits
        await asyncio.to_thread(process.join, _STOP_SECONDS)
        if process.is_alive():
            logger.warning(
                "embedded worker (pid %s) did not stop within %.0fs; killing it", process.pid, _STOP_SECONDS
            )
            process.kill()
            await asyncio.to_thread(process.join, 5)
