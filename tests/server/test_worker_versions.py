"""A worker and a server of different gpustack versions say so at registration: a release that cannot
work with the server's is refused with what to do, on both sides; a patch difference is a warning."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from gpustack import __version__
from gpustack.config import load_config
from gpustack.utils.versions import check
from gpustack.worker import agent
from tests.conftest import free_port
from tests.server.conftest import RunningServer
from tests.server.test_workers_api import registration


def test_versions_of_one_release_series_work_together_and_others_do_not() -> None:
    assert check("0.1.0", "0.1.0") == check("1.2.3", "1.2.3")
    assert check("0.1.0", "0.1.0").message == ""
    assert check("0.1.0", "0.1.7").compatible and "keep them equal" in check("0.1.0", "0.1.7").message
    assert check("1.2.0", "v1.2.9rc1").compatible
    assert not check("0.1.0", "0.2.0").compatible and not check("1.2.0", "2.2.0").compatible
    assert check("0.1.0", "").compatible and "did not say" in check("0.1.0", "").message


async def test_a_worker_of_another_release_is_refused_with_what_to_do(
    server: RunningServer, admin: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with server.worker_client() as worker:
        with caplog.at_level(logging.WARNING, logger="gpustack.server.api.workers"):
            response = await worker.post(
                "/v2/workers/register", json={**registration("old", 1), "version": "9.9.0"}
            )
        assert response.status_code == 409
        message = response.json()["message"]
        assert "9.9.0" in message and __version__ in message and f"gpustack=={__version__}" in message
        assert "registration refused" in caplog.text and "9.9.0" in caplog.text
    listed = (await admin.get("/v2/workers")).json()["items"]
    assert [w for w in listed if w["name"] == "old"] == []  # nothing was registered


async def test_a_worker_of_the_same_release_registers_and_hears_the_servers_version(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    major, minor = __version__.split(".")[:2]
    async with server.worker_client() as worker:
        with caplog.at_level(logging.WARNING, logger="gpustack.server.api.workers"):
            body = {**registration("patch", 1), "version": f"{major}.{minor}.999"}
            registered = await server.register(worker, body)
        assert registered["server_version"] == __version__
        assert f"{major}.{minor}.999" in caplog.text
        # A worker from before versions were sent still joins.
        assert (await server.register(worker, registration("older", 2)))["server_version"] == __version__


async def test_the_refused_worker_logs_the_servers_words(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(agent, "__version__", "9.9.0")
    config = load_config(
        {"data_dir": str(tmp_path / "worker"), "server_url": server.url, "worker_port": str(free_port()),
         "worker_ip": "127.0.0.1", "disable_metrics": True},
        {},
    )  # fmt: skip
    worker = agent.Worker(config, server.url, server.ctx.cluster_token)
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="gpustack.worker.agent"):
        task = asyncio.create_task(worker._register(stop))
        for _ in range(200):
            if "refuses this worker" in caplog.text:
                break
            await asyncio.sleep(0.05)
        stop.set()
        assert await asyncio.wait_for(task, 10) is None
    await worker.client.aclose()
    assert "refuses this worker" in caplog.text and "9.9.0" in caplog.text and "HTTP 409" in caplog.text
