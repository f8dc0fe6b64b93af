"""A real `gpustack start` process for the attacks on local files and storage: own data dir and ports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.e2e.cluster import GpustackProcess, wait_until

PASSWORD = "Security-Pass-1"


def server_process(data_dir: Path, *extra: str, name: str = "server") -> tuple[GpustackProcess, str]:
    """A server without its worker (fast to start) on a free port; its output goes beside the data dir."""
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--bootstrap-password", PASSWORD, "--disable-worker"]
    return GpustackProcess(name, data_dir, [*args, *extra]), f"http://127.0.0.1:{port}"


def wait_healthy(process: GpustackProcess, url: str, timeout: float = 90.0) -> None:
    def healthy() -> bool:
        if process.process is not None and process.process.poll() is not None:
            raise AssertionError(f"{process.name} exited:\n{process.log_tail()}")
        return httpx.get(url + "/healthz", timeout=2).status_code == 200

    wait_until(healthy, timeout, f"{process.name}'s /healthz")


@contextmanager
def running_server(data_dir: Path, *extra: str) -> Iterator[tuple[GpustackProcess, str]]:
    """Start, wait for /healthz, yield (process, url); always stop it, printing its output on failure."""
    process, url = server_process(data_dir, *extra)
    process.start()
    try:
        wait_healthy(process, url)
        yield process, url
    except BaseException:
        print(process.log_tail())
        raise
    finally:
        process.stop()


@contextmanager
def admin_client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/auth/login", json={"username": "admin", "password": PASSWORD})
        assert response.status_code == 200, response.text
        yield client
