"""POST /v2/model-evaluations: where models would go now, with the scheduler's reasons; nothing created."""

from __future__ import annotations

import httpx

from tests.server.conftest import RunningServer
from tests.server.test_workers_api import registration

GiB = 1024**3


async def register_gpu_worker(server: RunningServer, name: str, vram: int, ram: int = 16 * GiB) -> dict:
    body = registration(name, 1)
    body["status"] = {
        "memory": {"total": ram},
        "gpu_devices": [
            {"index": 0, "name": "NVIDIA T4", "vendor": "NVIDIA", "type": "cuda", "id": f"{name}:cuda:0",
             "memory": {"total": vram}},
        ],
    }  # fmt: skip
    async with server.worker_client() as worker:
        response = await worker.post("/v2/workers/register", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())


async def test_evaluation_says_where_each_replica_would_go_and_creates_nothing(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str
) -> None:
    await register_gpu_worker(server, "t4-a", 16 * GiB)
    await register_gpu_worker(server, "t4-b", 16 * GiB)
    response = await admin.post(
        "/v2/model-evaluations", json={"models": [{"name": "smol", "local_path": smollm2, "replicas": 2}]}
    )
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["compatible"] is True and "weights" in result["requirement"]
    assert [p["mode"] for p in result["placements"]] == ["gpu", "gpu"]
    assert {p["main"]["worker_name"] for p in result["placements"]} == {"t4-a", "t4-b"}  # spread
    assert result["placements"][0]["main"]["gpu_ids"][0].endswith(":cuda:0")
    assert (await admin.get("/v2/models")).json()["items"] == []
    assert (await admin.get("/v2/model-instances")).json()["items"] == []


async def test_evaluation_of_a_model_that_fits_nowhere_lists_the_reasons(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str
) -> None:
    await register_gpu_worker(server, "tiny", 2 * GiB, ram=3 * GiB)
    spec = {"name": "smol", "local_path": smollm2, "backend_parameters": ["--ctx-size=131072", "-np", "1"]}
    result = (await admin.post("/v2/model-evaluations", json=spec)).json()["results"][0]
    assert result["compatible"] is False
    assert any(
        r.startswith("worker tiny, GPU 0 (NVIDIA T4): 1.0 GiB allocatable, needs") for r in result["reasons"]
    )
    assert any("--ctx-size" in hint for hint in result["hints"])


async def test_evaluation_errors_are_per_model_or_a_clear_400(admin: httpx.AsyncClient) -> None:
    result = (
        await admin.post(
            "/v2/model-evaluations", json={"models": [{"name": "ghost", "local_path": "/no/m.gguf"}]}
        )
    ).json()["results"][0]
    assert result["compatible"] is False and "cannot read /no/m.gguf" in result["message"]
    bad = await admin.post("/v2/model-evaluations", json={"models": [{"name": "x"}]})
    assert bad.status_code == 400 and "local_path is required" in bad.json()["message"]
    empty = await admin.post("/v2/model-evaluations", json={"models": []})
    assert empty.status_code == 400


async def test_evaluations_need_an_administrator(server: RunningServer) -> None:
    async with server.client() as anonymous:
        assert (await anonymous.post("/v2/model-evaluations", json={"models": []})).status_code == 401
