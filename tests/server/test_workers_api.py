"""Workers: registration, name clashes, heartbeats, liveness, and the watch on their assignments."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx

from tests.conftest import free_port
from tests.server.conftest import RunningServer
from tests.server.test_models_api import instances, wait_for

GiB = 1024**3


def registration(
    name: str, port: int, identifier: str | None = None, interval: float = 30.0
) -> dict[str, Any]:
    return {
        "name": name,
        "uuid": identifier or uuid.uuid4().hex,
        "hostname": name,
        "ip": "127.0.0.1",
        "port": port,
        "heartbeat_interval": interval,
        "labels": {"os": "linux"},
        "status": {"memory": {"total": 64 * GiB}, "cpu": {"total": 8}},
    }


async def worker_state(admin: httpx.AsyncClient, worker_id: int) -> dict:
    return (await admin.get(f"/v2/workers/{worker_id}")).json()


async def test_registration_needs_the_cluster_token(server: RunningServer, admin: httpx.AsyncClient) -> None:
    response = await admin.post("/v2/workers/register", json=registration("w", 1))
    assert response.status_code == 403
    async with server.client(headers={"Authorization": "Bearer not-the-token"}) as stranger:
        assert (await stranger.post("/v2/workers/register", json=registration("w", 1))).status_code == 401


async def test_a_name_clash_gets_a_distinct_name_and_a_rename_keeps_the_worker(server: RunningServer) -> None:
    async with server.worker_client() as worker:
        first = await server.register(worker, registration("node", 1, "a" * 32))
        second = await server.register(worker, registration("node", 2, "b" * 32))
        assert first["name"] == "node" and second["name"] == "node-bbbbbbbb" and first["id"] != second["id"]
        renamed = await server.register(worker, registration("New-Name", 1, "a" * 32))
        assert renamed["id"] == first["id"] and renamed["name"] == "New-Name"
        again = await server.register(worker, registration("node", 2, "b" * 32))
        assert again["id"] == second["id"] and again["name"] == "node"


async def test_bad_registration_is_refused_with_the_field(server: RunningServer) -> None:
    async with server.worker_client() as worker:
        body = registration("w", 70000)
        response = await worker.post("/v2/workers/register", json=body)
        assert response.status_code == 400 and "port" in response.json()["message"]


async def test_silent_worker_becomes_not_ready_and_its_instances_are_placed_again(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str
) -> None:
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("w1", 1, interval=0.5))
        await admin.post("/v2/models", json={"name": "smol", "local_path": smollm2})

        async def scheduled() -> dict | None:
            items = await instances(admin)
            return items[0] if items and items[0]["state"] == "scheduled" else None

        # Keep heartbeating until the instance lands on the worker, then fall silent.
        for _ in range(100):
            await worker.put(
                f"/v2/workers/{registered['id']}/status", json={"status": registration("w1", 1)["status"]}
            )
            if await scheduled():
                break
            await asyncio.sleep(0.2)
        placed = await scheduled()
        assert placed and placed["worker_name"] == "w1" and placed["computed_resource_claim"]["ram"] > 0

        async def not_ready() -> dict | None:
            state = await worker_state(admin, registered["id"])
            return state if state["state"] == "not_ready" else None

        state = await wait_for(not_ready, timeout=15)
        assert "no heartbeat" in state["state_message"]

        async def back_to_pending() -> dict | None:
            items = await instances(admin)
            return (
                items[0]
                if items and items[0]["state"] == "pending" and items[0]["worker_id"] is None
                else None
            )

        instance = await wait_for(back_to_pending)
        assert (
            "w1 became not_ready" in instance["state_message"] or "w1: not_ready" in instance["state_message"]
        )

        # A heartbeat brings it back.
        await worker.put(
            f"/v2/workers/{registered['id']}/status", json={"status": registration("w1", 1)["status"]}
        )
        assert (await worker_state(admin, registered["id"]))["state"] == "ready"


async def test_a_silent_worker_that_still_answers_keeps_its_instances_until_it_stops_answering(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str
) -> None:
    port = free_port()

    async def healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(healthz, "127.0.0.1", port)
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("slow", port, interval=0.5))
        await admin.post("/v2/models", json={"name": "smol", "local_path": smollm2})
        await wait_for(lambda: _state_is(admin, "scheduled"))

        async def not_ready() -> bool:
            return bool((await worker_state(admin, registered["id"]))["state"] == "not_ready")

        # Its heartbeats stop (an overloaded worker), but its health check answers: well past the
        # 2 s grace of these tests, the instance stays where its engine runs.
        await wait_for(not_ready, timeout=15)
        await asyncio.sleep(4)
        [kept] = await instances(admin)
        assert kept["worker_id"] == registered["id"] and kept["state"] == "scheduled"

        listener.close()
        await listener.wait_closed()
        # Once it does not answer either, the instance is placed again (nowhere else fits here).
        [moved] = await wait_for(lambda: _pending_instances(admin), timeout=20)
        # Either the controller's own reason or, once the scheduler has tried again, its per-worker one.
        assert (
            "worker slow became not_ready" in moved["state_message"]
            or "worker slow: not_ready" in moved["state_message"]
        )


async def _pending_instances(admin: httpx.AsyncClient) -> list[dict]:
    items = await instances(admin)
    return items if items and items[0]["state"] == "pending" and items[0]["worker_id"] is None else []


async def test_worker_whose_healthz_does_not_answer_is_unreachable_until_it_does(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    port = free_port()
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("far", port))

        async def in_state(wanted: str) -> dict | None:
            state = await worker_state(admin, registered["id"])
            return state if state["state"] == wanted else None

        state = await wait_for(lambda: in_state("unreachable"), timeout=15)
        assert f"http://127.0.0.1:{port}/healthz" in state["state_message"]

        async def healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()

        listener = await asyncio.start_server(healthz, "127.0.0.1", port)
        try:
            await wait_for(lambda: in_state("ready"), timeout=15)
        finally:
            listener.close()


async def test_deleting_a_worker_returns_its_instances_to_pending(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str
) -> None:
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("gone", 1))
        await admin.post("/v2/models", json={"name": "smol", "local_path": smollm2})
        await wait_for(lambda: _state_is(admin, "scheduled"))
        assert (await admin.delete(f"/v2/workers/{registered['id']}")).status_code == 204
        await wait_for(lambda: _state_is(admin, "pending"))
        heartbeat = await worker.put(f"/v2/workers/{registered['id']}/status", json={"status": {}})
        assert heartbeat.status_code == 401  # the worker then registers again
        assert "was removed" in heartbeat.json()["message"]


async def _state_is(admin: httpx.AsyncClient, state: str) -> bool:
    items = await instances(admin)
    return bool(items) and items[0]["state"] == state


async def test_watch_streams_a_snapshot_then_changes_of_this_workers_instances(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str
) -> None:
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("watched", 1))
        async with worker.stream(
            "GET", "/v2/model-instances", params={"worker_id": registered["id"], "watch": "true"}
        ) as stream:
            lines = stream.aiter_lines()
            snapshot = json.loads(await anext(lines))
            assert snapshot == {"type": "snapshot", "items": []}
            model = (await admin.post("/v2/models", json={"name": "smol", "local_path": smollm2})).json()
            created = json.loads(await asyncio.wait_for(anext(lines), 20))
            assert created["type"] == "created" and created["data"]["state"] == "scheduled"
            instance_id = created["data"]["id"]
            update = await worker.put(
                f"/v2/model-instances/{instance_id}/state",
                json={"worker_id": registered["id"], "state": "starting", "port": 40000, "pid": 1234},
            )
            assert update.status_code == 200
            updated = json.loads(await asyncio.wait_for(anext(lines), 20))
            assert updated["type"] == "updated" and updated["data"]["state"] == "starting"
            assert updated["data"]["port"] == 40000
            await admin.delete(f"/v2/models/{model['id']}")
            deleted = json.loads(await asyncio.wait_for(anext(lines), 20))
            assert deleted["type"] == "deleted" and deleted["data"]["id"] == instance_id


async def test_a_worker_cannot_report_on_an_instance_it_does_not_hold(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str
) -> None:
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("holder", 1))
        await admin.post("/v2/models", json={"name": "smol", "local_path": smollm2})
        await wait_for(lambda: _state_is(admin, "scheduled"))
        instance = (await instances(admin))[0]
        wrong = await worker.put(
            f"/v2/model-instances/{instance['id']}/state",
            json={"worker_id": registered["id"] + 100, "state": "running"},
        )
        assert wrong.status_code == 403 and "reports only for itself" in wrong.json()["message"]
        scheduler_only = await worker.put(
            f"/v2/model-instances/{instance['id']}/state",
            json={"worker_id": registered["id"], "state": "pending"},
        )
        assert scheduler_only.status_code == 400


async def test_admin_labels_win_over_the_workers_own_and_survive_its_registration(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with server.worker_client() as worker:
        body = registration("labelled", 1, "c" * 32)
        registered = await server.register(worker, body)
        patched = await admin.patch(
            f"/v2/workers/{registered['id']}", json={"labels": {"rack": "a1", "os": "x"}}
        )
        assert patched.json()["labels"] == {"os": "x", "rack": "a1"}
        again = await server.register(worker, body)
        assert again["labels"] == {"os": "x", "rack": "a1"}
        cleared = await admin.patch(f"/v2/workers/{registered['id']}", json={"labels": {}})
        assert cleared.json()["labels"] == {"os": "linux"}


async def test_a_running_instance_is_unreachable_while_its_worker_does_not_answer_and_running_after(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str
) -> None:
    """The probes read only the instances that may change; an instance on a worker that keeps answering
    stays running throughout."""
    port = free_port()

    async def healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    steady = await asyncio.start_server(healthz, "127.0.0.1", 0)
    steady_port = steady.sockets[0].getsockname()[1]
    flaky = await asyncio.start_server(healthz, "127.0.0.1", port)
    async with server.worker_client() as worker, server.worker_client() as other:
        first = await server.register(worker, registration("flaky", port))
        second = await server.register(other, registration("steady", steady_port))
        clients = {first["id"]: worker, second["id"]: other}
        await admin.post("/v2/models", json={"name": "smol", "local_path": smollm2, "replicas": 2})

        async def placed() -> list[dict] | None:
            items = await instances(admin)
            ready = [i for i in items if i["state"] == "scheduled"]
            return (
                ready
                if len(ready) == 2 and {i["worker_id"] for i in ready} == {first["id"], second["id"]}
                else None
            )

        for instance in await wait_for(placed):
            update = await clients[instance["worker_id"]].put(
                f"/v2/model-instances/{instance['id']}/state",
                json={"worker_id": instance["worker_id"], "state": "running", "port": 40000, "pid": 1},
            )
            assert update.status_code == 200, update.text

        async def states() -> dict[int, str]:
            return {i["worker_id"]: i["state"] for i in await instances(admin)}

        flaky.close()
        await flaky.wait_closed()

        async def flaky_unreachable() -> dict[int, str] | None:
            found = await states()
            return found if found[first["id"]] == "unreachable" else None

        found = await wait_for(flaky_unreachable, timeout=15)
        assert found[second["id"]] == "running"
        [on_flaky] = [i for i in await instances(admin) if i["worker_id"] == first["id"]]
        assert (
            f"worker flaky is unreachable: the server cannot reach http://127.0.0.1:{port}"
            in on_flaky["state_message"]
        )

        flaky = await asyncio.start_server(healthz, "127.0.0.1", port)
        try:

            async def all_running() -> bool:
                return set((await states()).values()) == {"running"}

            await wait_for(all_running, timeout=15)
            assert (await worker_state(admin, first["id"]))["state"] == "ready"
        finally:
            flaky.close()
            steady.close()


async def test_a_workers_watch_snapshot_holds_its_own_and_its_lent_instances_only(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    from gpustack.server.db.tables import ModelInstanceRow

    clients = [server.worker_client() for _ in range(3)]
    try:
        host, lender, other = [
            (await server.register(client, registration(name, 1)))["id"]
            for client, name in zip(clients, ("host", "lender", "other"), strict=True)
        ]
        model = (
            await admin.post("/v2/models", json={"name": "m", "local_path": "/x/m.gguf", "replicas": 0})
        ).json()
        part = {
            "worker_id": lender,
            "worker_name": "lender",
            "worker_ip": "127.0.0.1",
            "gpu_indexes": [0],
            "claim": {},
        }
        async with server.ctx.session() as session:
            for name, worker_id, parts in (("split", host, [part]), ("alone", other, []), ("own", host, [])):
                session.add(
                    ModelInstanceRow(
                        name=name,
                        model_id=model["id"],
                        model_name="m",
                        worker_id=worker_id,
                        state="scheduled",
                        subordinate_workers=parts,
                    )
                )
            await session.commit()

        async def snapshot(client: httpx.AsyncClient, worker_id: int) -> list[str]:
            params = {"worker_id": worker_id, "watch": "true"}
            async with client.stream("GET", "/v2/model-instances", params=params) as stream:
                first = json.loads(await anext(stream.aiter_lines()))
            return [item["name"] for item in first["items"]]

        assert await snapshot(clients[0], host) == ["split", "own"]
        assert await snapshot(clients[1], lender) == ["split"]
        assert await snapshot(clients[2], other) == ["alone"]
    finally:
        for client in clients:
            await client.aclose()


async def test_a_round_that_places_its_share_leaves_the_rest_to_the_next_round_at_once(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str, monkeypatch: Any
) -> None:
    from gpustack.server.controllers import scheduler

    monkeypatch.setattr(scheduler, "ROUND_PLACEMENTS", 1)

    async def healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        writer.close()

    port = free_port()
    listener = await asyncio.start_server(healthz, "127.0.0.1", port)
    async with listener, server.worker_client() as worker:
        await server.register(worker, registration("roomy", port))
        await admin.post("/v2/models", json={"name": "many", "local_path": smollm2, "replicas": 4})

        async def all_scheduled() -> bool:
            items = await instances(admin)
            return len(items) == 4 and all(item["state"] == "scheduled" for item in items)

        # Well before the scheduler's 10 s timer: each round wakes the next.
        await wait_for(all_scheduled, timeout=5)
