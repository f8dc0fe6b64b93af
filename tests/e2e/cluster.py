"""Real `gpustack` processes on 127.0.0.1 with their own data dirs and ports, cleaned up by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from tests.conftest import free_port, free_port_range

T = TypeVar("T")

HEARTBEAT_SECONDS = "1"


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except httpx.TransportError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class GpustackProcess:
    """One `gpustack start` process; its log is kept to explain failures."""

    def __init__(self, name: str, data_dir: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.args = args
        self.env = env or {}
        self.log_path = data_dir.parent / f"{name}.out"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "GPUSTACK_HEARTBEAT_INTERVAL": HEARTBEAT_SECONDS, **self.env}
        env.pop("GPUSTACK_TEST_POSTGRES_URL", None)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gpustack", "start", "--data-dir", str(self.data_dir), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL; also kills any engine it left behind."""
        if self.process is None or self.process.poll() is not None:
            return
        children = psutil.Process(self.pid).children(recursive=True)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for child in children:
            if child.is_running():
                child.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """A server with its embedded worker, and any workers that join it."""

    def __init__(self, root: Path, password: str) -> None:
        self.root = root
        self.password = password
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[GpustackProcess] = []
        low, high = free_port_range(8)
        self.server = self._process(
            "server",
            [
                "--host", "127.0.0.1", "--port", str(self.port), "--bootstrap-password", password,
                "--worker-name", "main", "--worker-ip", "127.0.0.1", "--worker-port", str(free_port()),
                "--service-port-range", f"{low}-{high}",
                # A stopped worker's instances move after 5 s (default 90 s) so the tests see it.
                "--worker-lost-grace", "5",
            ],
        )  # fmt: skip

    def _process(self, name: str, args: list[str], env: dict[str, str] | None = None) -> GpustackProcess:
        process = GpustackProcess(name, self.root / name, args, env)
        self.processes.append(process)
        return process

    def add_worker(
        self, name: str, config_yaml: str = "", env: dict[str, str] | None = None
    ) -> GpustackProcess:
        token = (self.root / "server" / "token").read_text().strip()
        low, high = free_port_range(8)
        rpc_low, rpc_high = free_port_range(4)
        args = [
            "--server-url", self.url, "--token", token, "--worker-name", name, "--worker-ip", "127.0.0.1",
            "--worker-port", str(free_port()), "--service-port-range", f"{low}-{high}",
            "--rpc-server-port-range", f"{rpc_low}-{rpc_high}",
        ]  # fmt: skip
        if config_yaml:
            config_file = self.root / f"{name}.yaml"
            config_file.write_text(config_yaml)
            args += ["--config-file", str(config_file)]
        return self._process(name, args, env)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        def healthy() -> bool:
            if self.server.process is not None and self.server.process.poll() is not None:
                raise AssertionError(f"server exited:\n{self.server.log_tail()}")
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200

        wait_until(healthy, timeout, "the server's /healthz")

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"---- {p.name} ----\n{p.log_tail()}" for p in self.processes)

    @contextmanager
    def running(self, *server_args: str) -> Iterator[Cluster]:
        """Start the server, yield, and always stop every process; a failure prints their logs."""
        self.server.args += list(server_args)
        self.server.start()
        try:
            self.wait_healthy()
            yield self
        except BaseException:
            print(self.logs())
            raise
        finally:
            self.stop_all()
