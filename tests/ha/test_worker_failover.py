"""A worker joins a cluster of several servers: it takes their URLs (commas or a repeated flag) and
moves on to the next server when the one it uses cannot be reached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpustack.cli import build_parser
from gpustack.config import ConfigError, load_config
from gpustack.schemas.workers import WorkerRegistration, WorkerStatusReport
from gpustack.worker.client import ServerClient
from tests.conftest import free_port
from tests.server.conftest import RunningServer, server_settings, start_server
from tests.server.test_workers_api import registration


def test_server_url_takes_several_servers_separated_by_commas_or_repeated(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["start", "--data-dir", str(tmp_path), "--token", "t",
         "--server-url", "http://10.0.0.1:80,http://10.0.0.2:80/", "-s", "http://10.0.0.3:80"]
    )  # fmt: skip
    config = load_config(vars(args), {})
    assert config.server_urls == ["http://10.0.0.1:80", "http://10.0.0.2:80", "http://10.0.0.3:80"]
    assert config.server_url == "http://10.0.0.1:80" and not config.is_server
    from_env = load_config({"data_dir": str(tmp_path)}, {"GPUSTACK_SERVER_URL": "http://a:80, http://b:80"})
    assert from_env.server_urls == ["http://a:80", "http://b:80"]
    assert load_config({"data_dir": str(tmp_path)}, {}).is_server


def test_a_bad_server_url_among_several_is_named() -> None:
    with pytest.raises(ConfigError, match=r"--server-url: accepts an http:// or https:// URL"):
        load_config({"server_url": ["http://a:80,ftp://b"]}, {})


@pytest.fixture
async def lone_server(tmp_path: Path, clean_env: None) -> AsyncIterator[RunningServer]:
    settings = server_settings(tmp_path, f"sqlite:///{tmp_path / 'database.db'}")
    instance, stop, task, url = await start_server(settings)
    assert instance.ctx is not None
    yield RunningServer(url, instance.config, instance.ctx)
    stop.set()
    await task


async def test_a_worker_registers_and_heartbeats_through_the_next_server_when_one_cannot_be_reached(
    lone_server: RunningServer,
) -> None:
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a server that died
    client = ServerClient([gone, lone_server.url], lone_server.ctx.cluster_token)
    try:
        registered = await client.register(WorkerRegistration.model_validate(registration("w", free_port())))
        assert client.server_url == lone_server.url
        await client.report_status(registered.id, WorkerStatusReport.model_validate({"status": {}}))
    finally:
        await client.aclose()
