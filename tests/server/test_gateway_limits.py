"""Quotas and scopes of keys and users (requests and tokens per minute: 429 with Retry-After in OpenAI's
shape; the models a key may use), and the server's in-flight limits, which refuse at once rather than
queue into a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.server.conftest import RunningServer, login, server_settings, start_server
from tests.server.stub_models import api_key, new_key, stub_worker, until_routed

MESSAGES = [{"role": "user", "content": "hi"}]


def client_of(server: RunningServer, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


async def test_a_keys_requests_per_minute_are_limited_with_retry_after_in_openais_shape(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "m")
        async with server.client(headers={"Authorization": f"Bearer {await api_key(admin)}"}) as http:
            await until_routed(http, "m")
        limited = await api_key(admin, rpm_limit=2)
        client = client_of(server, limited)
        for _ in range(2):
            await client.chat.completions.create(model="m", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        response = refused.value.response
        assert 1 <= int(response.headers["retry-after"]) <= 60
        error = response.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert "limit is 2 requests per minute" in error["message"]
        # Another key of the same user has its own window.
        await client_of(server, await api_key(admin)).chat.completions.create(model="m", messages=MESSAGES)


async def test_tokens_per_minute_refuse_the_requests_after_the_one_that_went_over(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "m")
        async with server.client(headers={"Authorization": f"Bearer {await api_key(admin)}"}) as http:
            await until_routed(http, "m")
        client = client_of(server, await api_key(admin, tpm_limit=10))
        first = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=12)
        assert first.usage is not None and first.usage.total_tokens > 10
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1)
        assert "tokens per minute" in refused.value.message and refused.value.response.headers["retry-after"]


async def test_a_users_limit_covers_all_their_keys(server: RunningServer, admin: httpx.AsyncClient) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "m")
        created = await admin.post("/v2/users", json={"username": "carl", "password": "carl-password"})
        assert created.status_code == 201
        limited = await admin.put(f"/v2/users/{created.json()['id']}", json={"rpm_limit": 1})
        assert limited.status_code == 200 and limited.json()["rpm_limit"] == 1
        async with server.client(headers={"Authorization": f"Bearer {await api_key(admin)}"}) as http:
            await until_routed(http, "m")
        async with server.client() as carl:
            await login(carl, "carl", "carl-password")
            first, second = await api_key(carl), await api_key(carl)
        await client_of(server, first).chat.completions.create(model="m", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as refused:
            await client_of(server, second).chat.completions.create(model="m", messages=MESSAGES)
        assert "your user made 1 requests" in refused.value.message
        cleared = await admin.put(f"/v2/users/{created.json()['id']}", json={"rpm_limit": None})
        assert cleared.json()["rpm_limit"] is None
        await client_of(server, second).chat.completions.create(model="m", messages=MESSAGES)


async def test_a_key_uses_only_its_allowed_models_and_lists_only_those(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "a")
        await worker.deploy(admin, "b")
        async with server.client(headers={"Authorization": f"Bearer {await api_key(admin)}"}) as http:
            await until_routed(http, "a")
            await until_routed(http, "b")
        key_id, key = await new_key(admin, allowed_models=["a"])
        client = client_of(server, key)
        await client.chat.completions.create(model="a", messages=MESSAGES)
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client.chat.completions.create(model="b", messages=MESSAGES)
        assert "may not use model 'b'; it may use: a" in refused.value.message
        assert [m.id for m in (await client.models.list()).data] == ["a"]
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("b")
        widened = await admin.patch(f"/v2/api-keys/{key_id}", json={"allowed_models": None})
        assert widened.status_code == 200 and widened.json()["allowed_models"] is None
        await client.chat.completions.create(model="b", messages=MESSAGES)  # at once: the cache is dropped
        bad = await admin.post("/v2/api-keys", json={"name": "x", "rpm_limit": 0})
        assert bad.status_code == 400 and "rpm_limit" in bad.json()["message"]


@pytest.fixture
async def limited_server(tmp_path: Path, database_url: str, clean_env: None) -> AsyncIterator[RunningServer]:
    settings = server_settings(
        tmp_path, database_url, gateway_max_in_flight="3", gateway_model_max_in_flight="1"
    )
    instance, stop, task, url = await start_server(settings)
    assert instance.ctx is not None
    yield RunningServer(url, instance.config, instance.ctx)
    stop.set()
    await asyncio.wait_for(task, 60)


async def test_past_the_in_flight_limits_requests_are_refused_at_once_with_retry_after(
    limited_server: RunningServer,
) -> None:
    server = limited_server
    async with server.client() as admin:
        await login(admin)
        async with stub_worker(server) as worker:
            for name in ("a", "b", "c"):
                await worker.deploy(admin, name)
            key = await api_key(admin)
            async with server.client(headers={"Authorization": f"Bearer {key}"}) as http:
                for name in ("a", "b", "c"):
                    await until_routed(http, name)
                slow = {"messages": MESSAGES, "stub": {"latency_ms": 3000}}
                first = asyncio.create_task(http.post("/v1/chat/completions", json={"model": "a", **slow}))
                await asyncio.sleep(0.5)  # it is in flight
                busy = await http.post("/v1/chat/completions", json={"model": "a", "messages": MESSAGES})
                assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
                assert "--gateway-model-max-in-flight 1" in busy.json()["error"]["message"]
                others = [
                    asyncio.create_task(http.post("/v1/chat/completions", json={"model": name, **slow}))
                    for name in ("b", "c")
                ]
                await asyncio.sleep(0.5)
                # Three in flight, the most the server holds: any fourth is refused.
                full = await http.post("/v1/chat/completions", json={"model": "a", "messages": MESSAGES})
                assert full.status_code == 503 and full.headers["retry-after"] == "1"
                assert "--gateway-max-in-flight 3" in full.json()["error"]["message"]
                assert [r.status_code for r in await asyncio.gather(first, *others)] == [200, 200, 200]
                after = await http.post("/v1/chat/completions", json={"model": "a", "messages": MESSAGES})
                assert after.status_code == 200
