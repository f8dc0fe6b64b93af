"""Two servers on one PostgreSQL, in this test's event loop: one leads, the other takes over when it
stops; a follower's watch streams and credential checks follow what was done through the leader."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from gpustack.server import auth
from gpustack.server.server import Server
from gpustack.server.start_refused import StartRefused
from tests.server.conftest import ADMIN_PASSWORD, login, server_settings, start_server

T = TypeVar("T")


@dataclass
class Running:
    server: Server
    stop: asyncio.Event
    task: asyncio.Task
    url: str

    @property
    def leads(self) -> bool:
        return self.server.leadership is not None and self.server.leadership.is_leader

    async def shut(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


async def wait_for(check: Callable[[], Awaitable[T] | T], what: str, timeout: float = 30) -> T:
    for _ in range(int(timeout / 0.1)):
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def two(tmp_path: Path, postgres_url: str, clean_env: None) -> AsyncIterator[tuple[Running, Running]]:
    started: list[Running] = []
    try:
        for name in ("a", "b"):
            server, stop, task, url = await start_server(server_settings(tmp_path / name, postgres_url))
            started.append(Running(server, stop, task, url))
            if name == "a":
                await wait_for(lambda: started[0].leads, "server a to lead")
        yield started[0], started[1]
    finally:
        for running in started:
            if not running.task.done():
                await running.shut()


@pytest.fixture
def long_credential_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # An hour: a credential that stops working at once was cleared by the change, not by expiry.
    monkeypatch.setattr(auth, "_CACHE_TTL_SECONDS", 3600.0)


@asynccontextmanager
async def admin_client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await login(client, "admin", ADMIN_PASSWORD)
        yield client


@pytest.mark.postgres
async def test_one_server_leads_and_the_other_takes_over_when_it_stops(two: tuple[Running, Running]) -> None:
    a, b = two
    assert a.leads and not b.leads
    await a.shut()
    # A clean stop releases the lease: b takes over on its next attempt, not after the lease expires.
    await wait_for(lambda: b.leads, "server b to lead")


@pytest.mark.postgres
async def test_a_watch_on_a_follower_sees_changes_made_through_the_leader(
    two: tuple[Running, Running], smollm2: str
) -> None:
    a, b = two
    async with admin_client(a.url) as through_a, admin_client(b.url) as through_b:
        async with through_b.stream("GET", "/v2/models", params={"watch": "true"}) as stream:
            lines = stream.aiter_lines()
            assert json.loads(await anext(lines)) == {"type": "snapshot", "items": []}
            created = await through_a.post("/v2/models", json={"name": "smol", "local_path": smollm2})
            assert created.status_code == 201, created.text
            event = json.loads(await asyncio.wait_for(anext(lines), 30))
            assert event["type"] == "created" and event["data"]["name"] == "smol"
        # The leader's controllers made its instance; the follower's API shows it.
        instances = await wait_for(
            lambda: _items(through_b, "/v2/model-instances"), "the instance, through the follower"
        )
        assert [i["model_name"] for i in instances] == ["smol"]


@pytest.mark.postgres
async def test_an_api_key_deleted_through_one_server_stops_working_at_the_other_at_once(
    two: tuple[Running, Running], long_credential_cache: None
) -> None:
    a, b = two
    async with admin_client(a.url) as through_a:
        made = await through_a.post("/v2/api-keys", json={"name": "k"})
        assert made.status_code in (200, 201), made.text
        key = made.json()
        bearer = {"Authorization": f"Bearer {key['value']}"}
        async with httpx.AsyncClient(base_url=b.url, headers=bearer, timeout=30) as with_key:
            assert (await with_key.get("/v1/models")).status_code == 200  # verified, and cached, at b
            assert (await through_a.delete(f"/v2/api-keys/{key['id']}")).status_code == 204

            async def refused() -> bool:
                return (await with_key.get("/v1/models")).status_code == 401

            await wait_for(refused, "server b to refuse the deleted key")


async def test_a_second_server_on_the_same_sqlite_database_is_refused_in_words(
    tmp_path: Path, clean_env: None
) -> None:
    database = f"sqlite:///{tmp_path / 'a' / 'data' / 'database.db'}"
    server, stop, task, _url = await start_server(server_settings(tmp_path / "a", database))
    try:
        second = Server(server_settings_config(tmp_path / "b", database))
        with pytest.raises(StartRefused) as refused:
            await second.prepare()
        message = str(refused.value)
        assert "another gpustack server already uses the database sqlite:///" in message
        assert str(tmp_path / "a" / "data") in message  # which one: its data dir
        assert "Several servers need PostgreSQL (--database-url postgresql://...)" in message
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def server_settings_config(path: Path, database: str):  # noqa: ANN201 - a Config
    from gpustack.config import load_config

    return load_config(server_settings(path, database), {})


async def _items(client: httpx.AsyncClient, path: str) -> list[dict]:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    items: list[dict] = response.json()["items"]
    return items
