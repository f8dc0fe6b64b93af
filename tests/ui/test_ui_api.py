"""What the UI needed that the API lacked: watches of workers and models, and how a worker joins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.server.conftest import RunningServer
from tests.server.test_workers_api import registration


async def _next(lines: AsyncIterator[str]) -> dict[str, Any]:
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(anext(lines), 20))
        if event["type"] != "keepalive":
            return event


async def test_watching_workers_streams_the_list_then_each_change(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with server.worker_client() as worker:
        first = await server.register(worker, registration("first", 1))
        async with admin.stream("GET", "/v2/workers", params={"watch": "true"}) as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            lines = stream.aiter_lines()
            snapshot = await _next(lines)
            assert snapshot["type"] == "snapshot" and [w["name"] for w in snapshot["items"]] == ["first"]
            await admin.patch(f"/v2/workers/{first['id']}", json={"labels": {"team": "a"}})
            updated = await _next(lines)
            assert updated["type"] == "updated" and updated["data"]["labels"]["team"] == "a"
            assert "credential" not in updated["data"]
            await admin.delete(f"/v2/workers/{first['id']}")
            deleted = await _next(lines)
            assert deleted["type"] == "deleted" and deleted["data"]["id"] == first["id"]


async def test_a_filtered_model_watch_sends_only_matching_models(
    admin: httpx.AsyncClient, tmp_path: Any
) -> None:
    gguf = str(tmp_path / "m.gguf")
    async with admin.stream("GET", "/v2/models", params={"watch": "true", "search": "chat"}) as stream:
        lines = stream.aiter_lines()
        assert (await _next(lines)) == {"type": "snapshot", "items": []}
        for name in ("embedder", "chat-small"):
            body = {"name": name, "local_path": gguf, "replicas": 0}
            assert (await admin.post("/v2/models", json=body)).status_code == 201
        created = await _next(lines)
        assert created["type"] == "created" and created["data"]["name"] == "chat-small"


async def test_watches_are_for_administrators_only(server: RunningServer, admin: httpx.AsyncClient) -> None:
    await admin.post("/v2/users", json={"username": "bob", "password": "bob-password"})
    async with server.client() as bob:
        await bob.post("/auth/login", json={"username": "bob", "password": "bob-password"})
        for path in ("/v2/workers", "/v2/models"):
            assert (await bob.get(path, params={"watch": "true"})).status_code == 403


async def test_worker_join_says_where_the_token_is_without_sending_it(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    body = (await admin.get("/v2/worker-join")).json()
    assert body["token_file"] == f"{server.config.data_dir}/token"
    assert body["token_file"] in body["token_hint"]
    assert body["command"] == "gpustack start --server-url <server> --token <token>"
    assert body["server_port"] == server.config.port and body["tls"] is False
    assert server.ctx.cluster_token not in json.dumps(body)
