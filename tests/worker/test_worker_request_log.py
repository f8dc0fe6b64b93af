"""The worker's API logs its requests too: refusals at info, the rest once debug is on."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from gpustack.config import load_config
from gpustack.worker.api import create_worker_app
from gpustack.worker.serve import ServeManager


async def test_the_worker_api_logs_refusals_at_info_and_everything_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config({"data_dir": str(tmp_path / "data")}, {})
    serve = ServeManager(config, lambda: 1, None, lambda: [])  # type: ignore[arg-type]
    app = create_worker_app(lambda: "credential", serve, str(tmp_path / "log"))
    transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        caplog.set_level(logging.INFO, logger="gpustack.worker.requests")
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/serve-logs/1")).status_code == 401
        caplog.set_level(logging.DEBUG, logger="gpustack.worker.requests")
        assert (await client.get("/healthz")).status_code == 200
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "gpustack.worker.requests"]
    assert [(level, message.rsplit(" ", 2)[0]) for level, message in lines] == [
        (logging.INFO, '10.0.0.9 "GET /serve-logs/1" 401'),
        (logging.DEBUG, '10.0.0.9 "GET /healthz" 200'),
    ]
    await serve.shutdown()
