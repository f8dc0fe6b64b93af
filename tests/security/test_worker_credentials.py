"""Each worker has its own credential: the cluster token only registers, and a worker reaches only
its own status, instances and the models it runs."""

from __future__ import annotations

import httpx

from tests.server.conftest import RunningServer
from tests.server.test_models_api import instances, wait_for
from tests.server.test_workers_api import registration


async def _placed_on(admin: httpx.AsyncClient, worker_id: int) -> dict | None:
    items = await instances(admin)
    return next((i for i in items if i["worker_id"] == worker_id and i["state"] == "scheduled"), None)


async def test_the_cluster_token_only_registers(server: RunningServer, admin: httpx.AsyncClient) -> None:
    async with server.worker_client() as token_only, server.worker_client() as worker:
        registered = await server.register(worker, registration("w", 1))
        for method, path, body in (
            ("PUT", f"/v2/workers/{registered['id']}/status", {"status": {}}),
            ("GET", "/v2/model-instances", None),
            ("GET", "/v2/models/1", None),
            ("PUT", "/v2/model-instances/1/state", {"worker_id": registered["id"], "state": "running"}),
        ):
            response = await token_only.request(
                method, path, json=body, params={"worker_id": registered["id"]}
            )
            assert response.status_code == 403, (method, path, response.text)
            assert "cluster token only registers" in response.json()["message"]


async def test_registration_returns_a_credential_that_is_not_the_cluster_token(server: RunningServer) -> None:
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("w", 1))
    assert registered["credential"].startswith(f"gpustack-worker_{registered['id']}_")
    assert server.ctx.cluster_token not in registered["credential"]


async def test_a_worker_cannot_report_or_watch_for_another_worker(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str
) -> None:
    async with server.worker_client() as alice, server.worker_client() as bob:
        a = await server.register(alice, registration("alice", 1))
        b = await server.register(bob, registration("bob", 2))
        other_status = await alice.put(f"/v2/workers/{b['id']}/status", json={"status": {}})
        assert other_status.status_code == 403 and "only its own status" in other_status.json()["message"]
        watch_other = await alice.get("/v2/model-instances", params={"worker_id": b["id"]})
        assert watch_other.status_code == 403
        watch_all = await alice.get("/v2/model-instances")
        assert watch_all.status_code == 403 and f"worker_id={a['id']}" in watch_all.json()["message"]
        assert (await alice.get("/v2/model-instances", params={"worker_id": a["id"]})).status_code == 200


async def test_a_worker_sees_only_the_models_and_instances_it_runs(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str
) -> None:
    async with server.worker_client() as runner, server.worker_client() as bystander:
        r = await server.register(runner, registration("runner", 1))
        await admin.post(
            "/v2/models",
            json={"name": "secret", "local_path": smollm2, "env": {"HF_TOKEN": "hf_secret_value"}},
        )
        # Only `runner` heartbeats until the instance lands on it; `bystander` joins afterwards.
        placed = await wait_for(lambda: _placed_on(admin, r["id"]), timeout=20)
        await server.register(bystander, registration("bystander", 2))

        mine = await runner.get(f"/v2/models/{placed['model_id']}")
        assert mine.status_code == 200 and mine.json()["env"] == {"HF_TOKEN": "hf_secret_value"}
        assert (await runner.get(f"/v2/model-instances/{placed['id']}")).status_code == 200

        theirs = await bystander.get(f"/v2/models/{placed['model_id']}")
        assert theirs.status_code == 404 and "hf_secret_value" not in theirs.text
        assert (await bystander.get(f"/v2/model-instances/{placed['id']}")).status_code == 404
        report = await bystander.put(
            f"/v2/model-instances/{placed['id']}/state", json={"worker_id": r["id"], "state": "running"}
        )
        assert report.status_code == 403


async def test_a_worker_credential_opens_no_management_route(server: RunningServer) -> None:
    async with server.worker_client() as worker:
        await server.register(worker, registration("w", 1))
        for path in ("/v2/users", "/v2/api-keys", "/v2/workers", "/v2/models"):
            assert (await worker.get(path)).status_code == 403, path
        assert (await worker.post("/v2/api-keys", json={"name": "x"})).status_code == 403


async def test_a_removed_workers_credential_stops_working_at_once(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("w", 1))
        assert (
            await worker.put(f"/v2/workers/{registered['id']}/status", json={"status": {}})
        ).status_code == 204
        assert (await admin.delete(f"/v2/workers/{registered['id']}")).status_code == 204
        refused = await worker.put(f"/v2/workers/{registered['id']}/status", json={"status": {}})
        assert refused.status_code == 401 and "registers again" in refused.json()["message"]


async def test_a_forged_worker_credential_is_refused(server: RunningServer) -> None:
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("w", 1))
    forged = f"gpustack-worker_{registered['id']}_{'0' * 48}"
    async with server.client(headers={"Authorization": f"Bearer {forged}"}) as client:
        response = await client.put(f"/v2/workers/{registered['id']}/status", json={"status": {}})
    assert response.status_code == 401
