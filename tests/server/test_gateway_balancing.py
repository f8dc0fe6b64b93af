"""Which replica takes a request: the one with the fewest requests outstanding; a replica that does not
answer is passed over before any byte reaches the client, and one that keeps failing is left out for a
while, as the logs say."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from tests.server.conftest import RunningServer
from tests.server.stub_models import api_key, stub_worker, until_routed

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_requests_go_to_the_replica_with_the_fewest_outstanding(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        engines = await worker.deploy(admin, "m", replicas=2)
        async with server.client(headers={"Authorization": f"Bearer {await api_key(admin)}"}) as http:
            await until_routed(http, "m")
            slow = asyncio.create_task(
                http.post("/v1/chat/completions", json={**CHAT, "stub": {"latency_ms": 2000}})
            )
            await asyncio.sleep(0.5)
            fast = [await http.post("/v1/chat/completions", json=CHAT) for _ in range(6)]
            busy = (await slow).headers["x-stub-port"]
        assert {e.port for e in engines} == {int(busy), *(int(r.headers["x-stub-port"]) for r in fast)}
        assert all(r.headers["x-stub-port"] != busy for r in fast)  # never the one still working


async def test_a_dead_replica_is_passed_over_before_the_first_byte_and_left_out_for_a_while(
    server: RunningServer, admin: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with stub_worker(server) as worker:
        dead, alive = await worker.deploy(admin, "m", replicas=2)
        async with server.client(headers={"Authorization": f"Bearer {await api_key(admin)}"}) as http:
            await until_routed(http, "m")
            dead.stop()
            with caplog.at_level(logging.DEBUG, logger="gpustack.server.gateway"):
                answers = [await http.post("/v1/chat/completions", json=CHAT) for _ in range(12)]
        assert [r.status_code for r in answers] == [200] * 12
        assert {r.headers["x-stub-port"] for r in answers} == {str(alive.port)}
        messages = [r.getMessage() for r in caplog.records]
        passed_over = [m for m in messages if "did not answer" in m]
        assert passed_over and "trying the next one" in passed_over[0]
        assert sum("failed 3 times in a row; not sent requests for 5s" in m for m in messages) == 1
        attempts = [m.rsplit("attempts=", 1)[1].split()[0] for m in messages if "attempts=" in m]
        assert attempts[-1] == "1"  # once out, the dead one is no longer tried first
