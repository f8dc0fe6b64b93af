"""Models and their instances through the API: validation, replicas, scheduling messages."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.server.conftest import RunningServer


async def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1) -> Any:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def instances(client: httpx.AsyncClient, **params: Any) -> list[dict]:
    response = await client.get("/v2/model-instances", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_bad_model_input_gets_a_400_that_says_what_to_fix(admin: httpx.AsyncClient) -> None:
    cases = [
        ({"name": "m"}, "local_path is required"),
        ({"name": "m", "local_path": "models/m.gguf"}, "local_path must be an absolute path"),
        ({"name": "m", "local_path": "/m.safetensors"}, "needs the absolute path of a .gguf file"),
        ({"name": "m", "local_path": "/m.gguf", "replicas": -1}, "replicas: Input should be greater than"),
        ({"name": "m", "local_path": "/m.gguf", "backend": "tgi"}, "backend: Input should be 'llama-box'"),
        ({"name": "m", "local_path": "/m.gguf", "env": {"A B": "1"}}, "environment variable name 'A B'"),
        ({"name": "bad name", "local_path": "/m.gguf"}, "name must be 1-200 characters"),
        ({"name": "m", "local_path": "/m.gguf", "colour": "red"}, "colour: Extra inputs are not permitted"),
    ]
    for body, expected in cases:
        response = await admin.post("/v2/models", json=body)
        assert response.status_code == 400, body
        assert expected in response.json()["message"], (body, response.json())
    not_json = await admin.post("/v2/models", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["message"]
    assert (await admin.get("/v2/models")).json()["items"] == []


async def test_duplicate_model_name_is_a_conflict(admin: httpx.AsyncClient) -> None:
    body = {"name": "dup", "local_path": "/nowhere/m.gguf", "replicas": 0}
    assert (await admin.post("/v2/models", json=body)).status_code == 201
    response = await admin.post("/v2/models", json=body)
    assert response.status_code == 409 and "already exists" in response.json()["message"]


async def test_replicas_create_and_remove_instances(admin: httpx.AsyncClient) -> None:
    model = (
        await admin.post("/v2/models", json={"name": "r", "local_path": "/nowhere/m.gguf", "replicas": 3})
    ).json()
    await wait_for(lambda: _count(admin, model["id"], 3))
    await admin.put(f"/v2/models/{model['id']}", json={"replicas": 1})
    await wait_for(lambda: _count(admin, model["id"], 1))
    await admin.delete(f"/v2/models/{model['id']}")
    await wait_for(lambda: _count(admin, None, 0))
    assert (await admin.get(f"/v2/models/{model['id']}")).status_code == 404


async def test_replica_reconciles_run_side_by_side_add_each_missing_instance_once(
    admin: httpx.AsyncClient, server: RunningServer
) -> None:
    from sqlalchemy import func, select, update

    from gpustack.server.controllers.models import sync_replicas
    from gpustack.server.db.tables import ModelInstanceRow, ModelRow

    model = (
        await admin.post("/v2/models", json={"name": "r", "local_path": "/nowhere/m.gguf", "replicas": 0})
    ).json()
    async with server.ctx.session() as session:
        await session.execute(update(ModelRow).where(ModelRow.id == model["id"]).values(replicas=6))
        await session.commit()
    # The timer's reconcile and a change's, at once: each used to see six missing and add six.
    await asyncio.gather(*(sync_replicas(server.ctx) for _ in range(3)))
    async with server.ctx.session() as session:
        count = select(func.count()).where(ModelInstanceRow.model_id == model["id"])
        assert (await session.execute(count)).scalar_one() == 6


async def _count(client: httpx.AsyncClient, model_id: int | None, expected: int) -> bool:
    params = {"model_id": model_id} if model_id is not None else {}
    return len(await instances(client, **params)) == expected


async def test_an_unreadable_model_file_stays_pending_with_the_reason(admin: httpx.AsyncClient) -> None:
    await admin.post("/v2/models", json={"name": "ghost", "local_path": "/nowhere/ghost.gguf"})

    async def pending_with_reason() -> dict | None:
        items = await instances(admin)
        if items and "cannot read /nowhere/ghost.gguf" in items[0]["state_message"]:
            return items[0]
        return None

    instance = await wait_for(pending_with_reason)
    assert instance["state"] == "pending"


async def test_a_model_with_no_workers_is_pending_and_says_so(admin: httpx.AsyncClient, smollm2: str) -> None:
    await admin.post("/v2/models", json={"name": "smol", "local_path": smollm2})

    async def pending_with_reason() -> dict | None:
        items = await instances(admin)
        return items[0] if items and "no workers have registered" in items[0]["state_message"] else None

    instance = await wait_for(pending_with_reason)
    assert instance["state"] == "pending" and "Needs: weights" in instance["state_message"]


async def test_a_backend_parameter_with_a_value_of_the_wrong_kind_is_refused_naming_the_flag(
    admin: httpx.AsyncClient, smollm2: str
) -> None:
    # Before: the model was stored and its instance stayed pending with the estimate's complaint.
    response = await admin.post(
        "/v2/models", json={"name": "smol", "local_path": smollm2, "backend_parameters": ["--ctx-size=lots"]}
    )
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert "backend_parameters: --ctx-size: expects a positive integer" in message and "'lots'" in message
    assert (await admin.get("/v2/models")).json()["items"] == []
    # Flags the backend does not know are the engine's business: passed through untouched.
    body = {"name": "smol", "local_path": smollm2, "backend_parameters": ["--some-new-flag=x"]}
    fine = await admin.post("/v2/models", json=body)
    assert fine.status_code == 201 and fine.json()["backend_parameters"] == ["--some-new-flag=x"]


async def test_update_validates_the_merged_model(admin: httpx.AsyncClient) -> None:
    model = (
        await admin.post("/v2/models", json={"name": "u", "local_path": "/x/m.gguf", "replicas": 0})
    ).json()
    response = await admin.put(f"/v2/models/{model['id']}", json={"local_path": "/x/m.bin"})
    assert response.status_code == 400 and ".gguf" in response.json()["message"]
    response = await admin.put(f"/v2/models/{model['id']}", json={"name": "renamed"})
    assert response.status_code == 400 and "name: Extra inputs" in response.json()["message"]
    ok = await admin.put(f"/v2/models/{model['id']}", json={"backend_parameters": ["--ctx-size=2048"]})
    assert ok.status_code == 200 and ok.json()["backend_parameters"] == ["--ctx-size=2048"]


async def test_filters_and_pagination(admin: httpx.AsyncClient) -> None:
    for name in ("alpha", "beta", "gamma"):
        await admin.post("/v2/models", json={"name": name, "local_path": "/x/m.gguf", "replicas": 0})
    assert [m["name"] for m in (await admin.get("/v2/models", params={"search": "amm"})).json()["items"]] == [
        "gamma"
    ]
    page = (await admin.get("/v2/models", params={"perPage": 2, "page": 2})).json()
    assert [m["name"] for m in page["items"]] == ["gamma"]
    assert page["pagination"]["total"] == 3 and page["pagination"]["totalPage"] == 2
    bad = await admin.get("/v2/models", params={"perPage": 0})
    assert bad.status_code == 400 and "perPage" in bad.json()["message"]


async def test_a_list_returns_only_the_fields_asked_for(admin: httpx.AsyncClient) -> None:
    await admin.post("/v2/models", json={"name": "slim", "local_path": "/x/m.gguf", "replicas": 0})
    page = (await admin.get("/v2/models", params={"fields": "id, name"})).json()
    assert [set(item) for item in page["items"]] == [{"id", "name"}]
    assert page["pagination"]["total"] == 1 and "perPage" in page["pagination"]
    whole = (await admin.get("/v2/models")).json()["items"][0]
    assert {"replicas", "backend", "created_at"} <= set(whole)
    bad = await admin.get("/v2/models", params={"fields": "name,colour"})
    assert (
        bad.status_code == 400 and "'colour'" in bad.json()["message"] and "replicas" in bad.json()["message"]
    )


async def test_instance_logs_need_a_placed_instance(admin: httpx.AsyncClient, server: RunningServer) -> None:
    await admin.post("/v2/models", json={"name": "ghost", "local_path": "/nowhere/ghost.gguf"})
    items = await wait_for(lambda: instances(admin))
    response = await admin.get(f"/v2/model-instances/{items[0]['id']}/logs", params={"tail": 10})
    assert response.status_code == 400 and "not placed on a worker" in response.json()["message"]
    assert (await admin.get("/v2/model-instances/999/logs")).status_code == 404


async def test_the_longest_model_name_still_gets_its_instances(admin: httpx.AsyncClient) -> None:
    too_long = await admin.post("/v2/models", json={"name": "m" * 201, "local_path": "/x/m.gguf"})
    assert too_long.status_code == 400 and "1-200 characters" in too_long.json()["message"]
    longest = (await admin.post("/v2/models", json={"name": "m" * 200, "local_path": "/x/m.gguf"})).json()
    await wait_for(lambda: _count(admin, longest["id"], 1))
    other = (await admin.post("/v2/models", json={"name": "other", "local_path": "/x/m.gguf"})).json()
    await wait_for(lambda: _count(admin, other["id"], 1))
