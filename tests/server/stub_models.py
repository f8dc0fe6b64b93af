"""Models served by stub engines (tests/fixtures/stub_engine.py) for gateway tests against a real server:
a worker registers over the API, the scheduler places a custom-backend model on it, and for each instance
the test starts a stub engine holding that instance's secret and reports it running, as a worker would.

No gpustack worker process is involved, so a test sees the gateway alone, in seconds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gpustack.utils.engine_secret import ENVIRONMENT_VARIABLE, engine_secret
from tests.conftest import free_port
from tests.server.conftest import RunningServer
from tests.server.test_workers_api import registration

STUB = Path(__file__).resolve().parents[1] / "fixtures" / "stub_engine.py"


@dataclass
class StubEngine:
    instance_id: int
    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/stub/stats", timeout=5).json())


@dataclass
class StubWorker:
    server: RunningServer
    client: httpx.AsyncClient
    worker_id: int
    credential: str
    engines: list[StubEngine] = field(default_factory=list)

    async def deploy(
        self, admin: httpx.AsyncClient, name: str, routes: list[str] | None = None, replicas: int = 1,
        stub_args: tuple[str, ...] = (),
    ) -> list[StubEngine]:  # fmt: skip
        """A model on this worker, each instance served by a stub engine, running once the gateway sees it."""
        body: dict[str, Any] = {
            "name": name,
            "backend": "custom",
            "run_command": f"{sys.executable} {STUB} --host {{host}} --port {{port}}",
            "replicas": replicas,
            "resources": {"ram": "1GiB"},
        }
        if routes is not None:
            body["routes"] = routes
        created = await admin.post("/v2/models", json=body)
        assert created.status_code == 201, created.text
        model_id = created.json()["id"]

        async def scheduled() -> list[dict[str, Any]] | None:
            items = (await admin.get("/v2/model-instances", params={"model_id": model_id})).json()["items"]
            placed = [i for i in items if i["state"] == "scheduled"]
            return placed if len(placed) == replicas else None

        started = []
        for instance in await wait_for(scheduled):
            engine = start_stub(engine_secret(self.credential, instance["id"]), *stub_args)
            engine.instance_id = instance["id"]
            self.engines.append(engine)
            started.append(engine)
            response = await self.client.put(
                f"/v2/model-instances/{instance['id']}/state",
                json={"worker_id": self.worker_id, "state": "running", "port": engine.port,
                      "pid": engine.process.pid},
            )  # fmt: skip
            assert response.status_code == 200, response.text
        return started

    def stop(self) -> None:
        for engine in self.engines:
            engine.stop()


def start_stub(secret: str | None, *args: str) -> StubEngine:
    port = free_port()
    env = {**os.environ}
    if secret:
        env[ENVIRONMENT_VARIABLE] = secret
    process = subprocess.Popen(
        [sys.executable, str(STUB), "--port", str(port), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return StubEngine(0, port, process)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("the stub engine did not start")


async def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s")


@asynccontextmanager
async def stub_worker(server: RunningServer, name: str = "stubs") -> AsyncIterator[StubWorker]:
    # Something must answer the server's health checks of the worker, or it is marked unreachable and
    # its instances with it: a stub engine does (GET /healthz).
    health = start_stub(None)
    async with server.worker_client() as client:
        body = registration(name, health.port)
        body["status"]["memory"]["total"] = 256 * 1024**3
        registered = await server.register(client, body)
        worker = StubWorker(server, client, registered["id"], registered["credential"], [health])
        try:
            yield worker
        finally:
            worker.stop()


async def api_key(admin: httpx.AsyncClient, **fields: Any) -> str:
    return (await new_key(admin, **fields))[1]


async def new_key(admin: httpx.AsyncClient, **fields: Any) -> tuple[int, str]:
    """A new API key of the client's user: its id and value."""
    response = await admin.post("/v2/api-keys", json={"name": "gateway-test", **fields})
    assert response.status_code == 201, response.text
    return int(response.json()["id"]), str(response.json()["value"])


async def until_routed(client: httpx.AsyncClient, model: str, route: str = "chat/completions") -> None:
    """Until the gateway's table holds the model's running instances (events arrive asynchronously)."""

    async def routed() -> bool:
        response = await client.post(f"/v1/{route}", json={"model": model, "messages": [], "input": "x"})
        return response.status_code not in (404, 503)

    await wait_for(routed)
