"""Errors that carry no text of their own (httpx's timeouts) still reach state messages and logs with
words: what failed, and on which request."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpustack.config import load_config
from gpustack.schemas.models import ModelInstanceState, ModelInstanceStateUpdate
from gpustack.utils.errors import describe_error
from gpustack.worker.serve import ServeManager
from tests.server.test_models_api import wait_for


@pytest.fixture
async def exhausted_pool() -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client whose only connection is held by a request a silent server never answers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=httpx.Timeout(30, pool=0.2))
    holder = asyncio.create_task(client.get(url + "/held"))
    await asyncio.sleep(0.1)
    yield client, url
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)
    await client.aclose()
    silent.close()


async def test_a_pool_timeout_is_described_with_its_limit_and_request(
    exhausted_pool: tuple[httpx.AsyncClient, str],
) -> None:
    client, url = exhausted_pool
    with pytest.raises(httpx.PoolTimeout) as raised:
        await client.get(url + "/v2/models/3")
    assert str(raised.value) == ""  # what the worker used to report
    assert describe_error(raised.value) == (
        f"PoolTimeout: no connection available from the pool within 0.2 s (GET {url}/v2/models/3)"
    )
    assert describe_error(asyncio.TimeoutError()) == "TimeoutError: the operation timed out"
    assert describe_error(ValueError("bad value")) == "bad value"
    assert describe_error(RuntimeError()) == "RuntimeError: no details given"


class PoolStarvedServer:
    """The worker's view of a server it cannot get a connection to."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url
        self.reports: list[ModelInstanceStateUpdate] = []

    async def get_model(self, model_id: int) -> dict[str, Any]:
        response = await self.client.get(f"{self.url}/v2/models/{model_id}")
        return dict(response.json())

    async def report_instance(self, instance_id: int, update: ModelInstanceStateUpdate) -> None:
        self.reports.append(update)


async def test_a_start_that_fails_on_the_network_says_why_in_one_line(
    tmp_path: Path, exhausted_pool: tuple[httpx.AsyncClient, str], caplog: pytest.LogCaptureFixture
) -> None:
    server = PoolStarvedServer(*exhausted_pool)
    config = load_config({"data_dir": str(tmp_path / "data")}, {})
    manager = ServeManager(config, lambda: 1, server, lambda: [])  # type: ignore[arg-type]
    instance = {
        "id": 5, "name": "m-5", "model_id": 3, "model_name": "m", "worker_id": 1, "worker_name": "w",
        "state": ModelInstanceState.SCHEDULED.value, "gpu_indexes": [], "placement": None,
    }  # fmt: skip
    caplog.set_level(logging.INFO, logger="gpustack.worker.serve")
    manager.reconcile({5: instance})

    async def failed() -> bool:
        await asyncio.sleep(0)
        return any(r.state == ModelInstanceState.ERROR for r in server.reports)

    try:
        await wait_for(failed, timeout=10)
    finally:
        await manager.shutdown()
    error = next(r for r in server.reports if r.state == ModelInstanceState.ERROR)
    assert error.state_message == (
        "the worker failed to start the engine: PoolTimeout: no connection available from the pool "
        f"within 0.2 s (GET {server.url}/v2/models/3)"
    )
    logged = [r for r in caplog.records if r.name == "gpustack.worker.serve" and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in logged] == [f"model instance m-5: {error.state_message}"]
    assert logged[0].exc_info is None  # an expected failure: no traceback
