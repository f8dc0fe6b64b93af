"""Heartbeats written in groups: each one is recorded before it is answered, and only a change is told."""

from __future__ import annotations

import asyncio

import httpx

from tests.server.conftest import RunningServer
from tests.server.test_workers_api import GiB, registration, worker_state


async def test_heartbeats_sent_at_once_by_many_workers_are_each_recorded(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    workers = []
    for number in range(40):
        client = server.worker_client()
        workers.append((client, await server.register(client, registration(f"w{number}", 1000 + number))))
    try:
        before = {w["id"]: (await worker_state(admin, w["id"]))["last_heartbeat_at"] for _, w in workers}
        await asyncio.sleep(0.05)
        answers = await asyncio.gather(
            *(
                client.put(
                    f"/v2/workers/{w['id']}/status",
                    json={"status": {"memory": {"total": (number + 1) * GiB}, "cpu": {"total": 8}}},
                )
                for number, (client, w) in enumerate(workers)
            )
        )
        assert [answer.status_code for answer in answers] == [204] * len(workers)
        # Answered means committed: every worker's own status and a later heartbeat time, at once.
        for number, (_, w) in enumerate(workers):
            state = await worker_state(admin, w["id"])
            assert state["status"]["memory"]["total"] == (number + 1) * GiB
            assert state["last_heartbeat_at"] > before[w["id"]]
    finally:
        for client, _ in workers:
            await client.aclose()


async def test_a_heartbeat_that_changes_nothing_moves_its_time_but_tells_no_watcher(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    status = registration("quiet", 1)["status"]
    async with server.worker_client() as worker, server.ctx.bus.subscribe("workers") as events:
        registered = await server.register(worker, registration("quiet", 1))
        path = f"/v2/workers/{registered['id']}/status"

        async def told() -> list[dict]:
            seen = []
            while (event := await events.get(timeout=0.3)) is not None:
                seen.append(event.data)
            return seen

        await told()  # the registration's own event
        assert (await worker.put(path, json={"status": status})).status_code == 204
        await told()  # the first heartbeat this server sees is written whatever it says
        first = (await worker_state(admin, registered["id"]))["last_heartbeat_at"]

        assert (await worker.put(path, json={"status": status})).status_code == 204
        assert await told() == []
        assert (await worker_state(admin, registered["id"]))["last_heartbeat_at"] > first

        changed = {**status, "cpu": {"total": 8, "utilization_rate": 55.0}}
        assert (await worker.put(path, json={"status": changed})).status_code == 204
        [event] = await told()
        assert event["id"] == registered["id"] and event["status"]["cpu"]["utilization_rate"] == 55.0


async def test_an_unwell_heartbeat_then_a_well_one_turn_the_worker_not_ready_and_back(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    status = registration("flaky", 1)["status"]
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("flaky", 1))
        path = f"/v2/workers/{registered['id']}/status"
        unwell = {"status": status, "healthy": False, "state_message": "disk full on /var/lib/gpustack"}
        assert (await worker.put(path, json=unwell)).status_code == 204
        state = await worker_state(admin, registered["id"])
        assert state["state"] == "not_ready" and state["state_message"] == "disk full on /var/lib/gpustack"
        # Same status as before: the readiness change alone is written.
        assert (await worker.put(path, json={"status": status})).status_code == 204
        assert (await worker_state(admin, registered["id"]))["state"] == "ready"
