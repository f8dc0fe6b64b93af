"""What the log says at debug, switched on at run time: every request, each scheduling round, worker
reports, and which instance the gateway chose for a model."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from gpustack.log import current_level, set_level
from tests.server.conftest import RunningServer
from tests.server.stub_models import api_key, stub_worker, until_routed
from tests.server.test_models_api import wait_for
from tests.server.test_workers_api import registration


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record that passes the process's level, which starts at info (gpustack start's default)."""
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler = Keep()
    before = current_level()
    set_level("info")
    logging.getLogger().addHandler(handler)
    yield kept
    logging.getLogger().removeHandler(handler)
    set_level(before)


def lines(records: list[logging.LogRecord], logger: str, level: int | None = None) -> list[str]:
    return [r.getMessage() for r in records if r.name == logger and (level is None or r.levelno == level)]


async def test_requests_are_logged_failures_at_info_and_the_rest_once_debug_is_on(
    server: RunningServer, records: list[logging.LogRecord]
) -> None:
    async with server.client() as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v2/models")).status_code == 401
        logged = lines(records, "gpustack.server.requests")
        assert len(logged) == 1 and '"GET /v2/models" 401' in logged[0] and logged[0].endswith(" ms")
        assert (await client.put("/debug/log_level", content="debug")).status_code == 200  # the FAQ's way
        assert (await client.get("/healthz")).status_code == 200
    debug = lines(records, "gpustack.server.requests", logging.DEBUG)
    assert any('"GET /healthz" 200' in line for line in debug), debug


async def test_debug_log_shows_scheduling_rounds_and_worker_reports(
    server: RunningServer, admin: httpx.AsyncClient, records: list[logging.LogRecord]
) -> None:
    set_level("debug")
    async with server.worker_client() as worker:
        response = await worker.post("/v2/workers/register", json=registration("w", 1))
        worker_id = response.json()["id"]
        if "credential" in response.json():
            worker.headers["Authorization"] = f"Bearer {response.json()['credential']}"
        status = await worker.put(
            f"/v2/workers/{worker_id}/status", json={"status": registration("w", 1)["status"]}
        )
        assert status.status_code == 204, status.text
    await admin.post("/v2/models", json={"name": "ghost", "local_path": "/nowhere/ghost.gguf"})

    async def explained() -> bool:
        scheduler = lines(records, "gpustack.server.controllers.scheduler", logging.DEBUG)
        return any(
            "placing 1 pending instance(s); allocatable: w (ready, 0 placed): RAM" in s for s in scheduler
        )

    await wait_for(explained)
    scheduler = lines(records, "gpustack.server.controllers.scheduler", logging.DEBUG)
    assert any("cannot estimate model ghost" in line for line in scheduler), scheduler
    assert f"worker {worker_id} reports its status (healthy: True)" in lines(
        records, "gpustack.server.api.workers", logging.DEBUG
    )


async def test_debug_log_names_the_instance_the_gateway_chose(
    server: RunningServer, admin: httpx.AsyncClient, records: list[logging.LogRecord]
) -> None:
    async with stub_worker(server, "w") as worker:
        (engine,) = await worker.deploy(admin, "m")
        key = await api_key(admin)
        async with server.client(headers={"Authorization": f"Bearer {key}"}) as client:
            await until_routed(client, "m")
            set_level("debug")
            answer = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
            assert answer.status_code == 200
    gateway = lines(records, "gpustack.server.gateway", logging.DEBUG)
    chosen = [line for line in gateway if f"(direct, engine port {engine.port}): HTTP 200" in line]
    assert chosen and " model m: instance m-" in chosen[0] and " on w " in chosen[0], gateway
