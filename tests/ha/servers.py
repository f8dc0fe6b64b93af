"""Several `gpustack start` servers on one PostgreSQL, and workers that know them all: real processes on
127.0.0.1 with their own data dirs and ports, cleaned up by pid (for tests/ha and bench/chaos.py)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from tests.conftest import free_port, free_port_range
from tests.e2e.cluster import GpustackProcess, wait_until

PASSWORD = "Ha-Admin-Pass-1"
_LEADER = re.compile(r"^gpustack_server_leader (\S+)$", re.MULTILINE)


async def _admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(os.environ["GPUSTACK_TEST_POSTGRES_URL"])
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def own_database() -> Iterator[str]:
    """A new database on the test PostgreSQL (GPUSTACK_TEST_POSTGRES_URL), dropped afterwards."""
    name = f"gpustack_ha_{secrets.token_hex(6)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        base = os.environ["GPUSTACK_TEST_POSTGRES_URL"]
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Servers:
    """`count` servers (no embedded workers) on `database_url`, and the workers that join them."""

    def __init__(self, root: Path, database_url: str, count: int = 2, server_args: list[str] | None = None):
        self.root = root
        self.metrics_token = secrets.token_hex(16)
        self.ports = [free_port() for _ in range(count)]
        self.servers = [
            GpustackProcess(
                f"server-{i}",
                root / f"server-{i}",
                [
                    "--host", "127.0.0.1", "--port", str(port), "--disable-worker",
                    "--bootstrap-password", PASSWORD, *(server_args or []),
                ],
                # Not on the command line: it holds the database's password.
                env={"GPUSTACK_DATABASE_URL": database_url, "GPUSTACK_METRICS_TOKEN": self.metrics_token},
            )
            for i, port in enumerate(self.ports)
        ]  # fmt: skip
        self.workers: list[GpustackProcess] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def healthy(self, index: int) -> bool:
        process = self.servers[index].process
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server {index} exited:\n{self.servers[index].log_tail()}")
        try:
            return httpx.get(self.urls[index] + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def start(self, index: int, timeout: float = 60) -> None:
        self.servers[index].start()
        wait_until(lambda: self.healthy(index), timeout, f"server {index}'s /healthz")

    def leads(self, index: int) -> bool | None:
        """What server `index` says of itself (its gpustack_server_leader gauge); None when it is down."""
        try:
            response = httpx.get(
                self.urls[index] + "/metrics",
                headers={"Authorization": f"Bearer {self.metrics_token}"},
                timeout=5,
            )
        except httpx.TransportError:
            return None
        found = _LEADER.search(response.text)
        return found is not None and float(found.group(1)) == 1.0

    def leader(self) -> int | None:
        """The index of the one server that leads; None while none (or, wrongly, several) does."""
        leading = [i for i in range(len(self.servers)) if self.leads(i)]
        return leading[0] if len(leading) == 1 else None

    def token(self) -> str:
        return (self.root / "server-0" / "token").read_text().strip()

    def add_worker(self, name: str, extra: list[str] | None = None) -> GpustackProcess:
        low, high = free_port_range(8)
        worker = GpustackProcess(
            name,
            self.root / name,
            [
                "--server-url", ",".join(self.urls), "--worker-name", name, "--worker-ip", "127.0.0.1",
                "--worker-port", str(free_port()), "--worker-metrics-port", str(free_port()),
                "--service-port-range", f"{low}-{high}", "--disable-rpc-servers", *(extra or []),
            ],
            env={"GPUSTACK_TOKEN": self.token()},
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for process in [*reversed(self.workers), *self.servers]:
            process.stop()

    def logs(self, lines: int = 60) -> str:
        return "\n".join(f"---- {p.name} ----\n{p.log_tail(lines)}" for p in [*self.servers, *self.workers])

    @contextmanager
    def running(self) -> Iterator[Servers]:
        """Start the first server, let it lead, start the others; always stop every process after."""
        try:
            self.start(0)
            wait_until(lambda: self.leads(0), 30, "server 0 to lead")
            for index in range(1, len(self.servers)):
                self.start(index)
            yield self
        except BaseException:
            print(self.logs())
            raise
        finally:
            self.stop_all()


class Admin:
    """The management API of one server, logged in as the admin (a session any server accepts)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        response = self.http.post("/auth/login", json={"username": "admin", "password": PASSWORD})
        assert response.status_code == 200, response.text

    def instances(self, model: str | None = None) -> list[dict]:
        response = self.http.get("/v2/model-instances")
        assert response.status_code == 200, response.text
        items = list(response.json()["items"])
        return [i for i in items if model is None or i["model_name"] == model]

    def close(self) -> None:
        self.http.close()
