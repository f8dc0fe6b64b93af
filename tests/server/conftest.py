"""A real server (HTTP on a free port, real database) started inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gpustack.config import Config, load_config
from gpustack.server.context import ServerContext
from gpustack.server.server import Server
from tests.conftest import free_port

ADMIN_PASSWORD = "Admin-Pass-1"


@dataclass
class RunningServer:
    url: str
    config: Config
    ctx: ServerContext

    def client(self, **kwargs) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30.0, **kwargs)

    def worker_client(self) -> httpx.AsyncClient:
        """A client holding the cluster token: it can register, then `register` gives it a credential."""
        return self.client(headers={"Authorization": f"Bearer {self.ctx.cluster_token}"})

    async def register(self, client: httpx.AsyncClient, body: dict) -> dict:
        """Register a worker with the cluster token; `client` then uses the credential it got back."""
        response = await client.post(
            "/v2/workers/register", json=body, headers={"Authorization": f"Bearer {self.ctx.cluster_token}"}
        )
        assert response.status_code == 200, response.text
        registered: dict = response.json()
        client.headers["Authorization"] = f"Bearer {registered['credential']}"
        return registered


async def start_server(settings: dict[str, str | bool]) -> tuple[Server, asyncio.Event, asyncio.Task, str]:
    config = load_config(settings, {})
    server = Server(config)
    await server.prepare()
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(stop))
    url = f"http://127.0.0.1:{config.port}"
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            try:
                if (await http.get(url + "/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    return server, stop, task, url


def server_settings(tmp_path: Path, database_url: str, **extra: str | bool) -> dict[str, str | bool]:
    return {
        "data_dir": str(tmp_path / "data"),
        "host": "127.0.0.1",
        "port": str(free_port()),
        "database_url": database_url,
        "disable_worker": True,
        "bootstrap_password": ADMIN_PASSWORD,
        # A lost worker's instances move after 2 s instead of the default 90 s, so tests see it.
        "worker_lost_grace": "2",
        **extra,
    }


@pytest.fixture
async def server(tmp_path: Path, database_url: str, clean_env: None) -> AsyncIterator[RunningServer]:
    instance, stop, task, url = await start_server(server_settings(tmp_path, database_url))
    assert instance.ctx is not None
    yield RunningServer(url, instance.config, instance.ctx)
    stop.set()
    await asyncio.wait_for(task, 60)


async def login(client: httpx.AsyncClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    response = await client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text


@pytest.fixture
async def admin(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as client:
        await login(client)
        yield client
