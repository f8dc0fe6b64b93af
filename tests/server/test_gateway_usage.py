"""Usage metering: what the engine reports is what GET /v2/usage says, for plain and streamed requests
(the usage the gateway asks for on a stream is not passed to a client that did not ask), grouped and
ranged as asked, each user seeing their own, and nothing lost when the server stops cleanly."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.server.conftest import RunningServer, login, server_settings, start_server
from tests.server.stub_models import api_key, new_key, stub_worker, until_routed, wait_for

MESSAGES = [{"role": "user", "content": "How many tokens is this?"}]


async def usage(admin: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await admin.get("/v2/usage", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def until_usage(admin: httpx.AsyncClient, requests: int, **params: Any) -> dict[str, Any]:
    """Usage is written in batches every few seconds: wait for the batch."""

    async def written() -> dict[str, Any] | None:
        report = await usage(admin, **params)
        return report if report["total"]["requests"] >= requests else None

    return dict(await wait_for(written, timeout=30))


async def test_usage_of_plain_and_streamed_requests_is_the_engines_and_the_extra_chunk_stays_hidden(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "m")
        async with server.client(headers={"Authorization": f"Bearer {await api_key(admin)}"}) as http:
            await until_routed(http, "m")
        key_id, key = await new_key(admin, name="metered")
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        plain = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=3)
        assert plain.usage is not None and plain.usage.completion_tokens == 3
        prompt = plain.usage.prompt_tokens

        stream = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5, stream=True)
        unasked = [chunk async for chunk in stream]
        assert len(unasked) == 5 and all(c.choices for c in unasked)  # no usage-only chunk
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, max_tokens=4, stream=True, stream_options={"include_usage": True}
        )
        asked = [chunk async for chunk in stream]
        assert (
            not asked[-1].choices and asked[-1].usage is not None and asked[-1].usage.completion_tokens == 4
        )

        report = await until_usage(admin, 3, api_key_id=key_id, group_by="model,api_key")
        (item,) = report["items"]
        assert (item["model"], item["api_key_id"], item["api_key_name"]) == ("m", key_id, "metered")
        assert item["requests"] == 3 and item["failed_requests"] == 0
        assert item["prompt_tokens"] == 3 * prompt and item["completion_tokens"] == 3 + 5 + 4
        assert item["total_tokens"] == 3 * prompt + 12 and report["total"] == {
            k: item[k]
            for k in ("requests", "failed_requests", "prompt_tokens", "completion_tokens", "total_tokens")
        }


async def test_usage_is_grouped_ranged_and_each_user_sees_their_own(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "m")
        admin_key = await api_key(admin)
        assert (
            await admin.post("/v2/users", json={"username": "bob", "password": "bob-password"})
        ).status_code == 201
        async with server.client() as bob:
            await login(bob, "bob", "bob-password")
            bob_key = await api_key(bob)
            async with server.client(headers={"Authorization": f"Bearer {admin_key}"}) as http:
                await until_routed(http, "m")
            for key in (admin_key, bob_key, bob_key):
                client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
                await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1)
            everyone = await until_usage(admin, 3, group_by="user")
            by_user = {i["username"]: i["requests"] for i in everyone["items"]}
            assert by_user["bob"] == 2 and by_user["admin"] >= 1
            own = await usage(bob, group_by="user,model")
            assert [(i["username"], i["model"], i["requests"]) for i in own["items"]] == [("bob", "m", 2)]
            assert (await bob.get("/v2/usage", params={"user_id": 1})).status_code == 400

        hourly = await usage(admin, group_by="hour")
        this_hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        assert [datetime.fromisoformat(i["hour"]) for i in hourly["items"]] == [this_hour]
        daily = await usage(admin, group_by="day,model")
        assert [(i["day"], i["model"]) for i in daily["items"]] == [(this_hour.date().isoformat(), "m")]
        yesterday = this_hour - timedelta(days=1)
        earlier = await usage(
            admin, start=yesterday.isoformat(), end=(yesterday + timedelta(hours=1)).isoformat()
        )
        assert earlier["items"] == [] and earlier["total"]["requests"] == 0
        for params, words in (
            ({"group_by": "colour"}, "unknown group 'colour'"),
            ({"group_by": "hour,day"}, "hour or day"),
            ({"start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}, "start must be before end"),
        ):
            response = await admin.get("/v2/usage", params=params)
            assert response.status_code == 400 and words in response.json()["message"], response.text


async def test_nothing_metered_is_lost_when_the_server_stops_cleanly(
    tmp_path: Path, database_url: str, clean_env: None
) -> None:
    settings = server_settings(tmp_path, database_url)
    instance, stop, task, url = await start_server(settings)
    assert instance.ctx is not None
    running = RunningServer(url, instance.config, instance.ctx)
    try:
        async with running.client() as admin:
            await login(admin)
            async with stub_worker(running) as worker:
                await worker.deploy(admin, "m")
                async with running.client(
                    headers={"Authorization": f"Bearer {await api_key(admin)}"}
                ) as http:
                    await until_routed(http, "m")
                key_id, key = await new_key(admin, name="metered")
                async with running.client(headers={"Authorization": f"Bearer {key}"}) as http:
                    for _ in range(5):
                        answer = await http.post(
                            "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
                        )
                        assert answer.status_code == 200
    finally:
        stop.set()  # at once: the batch of the last seconds is still in memory
        await asyncio.wait_for(task, 60)
    instance, stop, task, url = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=url) as admin:
            await login(admin)
            assert (await usage(admin, api_key_id=key_id))["total"]["requests"] == 5
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_a_range_at_the_edges_of_time_is_an_answer_or_a_400_not_a_500(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    """Found by schemathesis: the default 7 days before an `end` in year 1 fell off the calendar (500)."""
    early = await admin.get("/v2/usage", params={"end": "0001-01-01T00:00:02Z", "group_by": ""})
    assert early.status_code == 200, early.text
    assert early.json()["total"]["requests"] == 0
    shifted = await admin.get("/v2/usage", params={"start": "0001-01-01T00:00:00+05:00"})
    assert shifted.status_code == 400 and "start: " in shifted.json()["message"]
    late = await admin.get("/v2/usage", params={"end": "9999-12-31T23:59:59-05:00"})
    assert late.status_code == 400 and "end: " in late.json()["message"]
