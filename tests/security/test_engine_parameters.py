"""Engine settings a user could misconfigure: where the engine listens belongs to the worker, and no
parameter or variable may be too big to start a process with. The API refuses them; the worker and the
restart controller refuse settings stored before the API did."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gpustack.backends.base import Executable
from gpustack.config import load_config
from gpustack.schemas.engine_settings import (
    MAX_PARAMETER_BYTES,
    MAX_PARAMETERS,
    MAX_VARIABLE_VALUE_BYTES,
    check_backend_parameters,
)
from gpustack.schemas.models import ModelInstanceState, ModelInstanceStateUpdate
from gpustack.server.db.tables import ModelInstanceRow, ModelRow, utcnow
from gpustack.worker.serve import ServeManager
from tests.backends.helpers import command, spec
from tests.server.conftest import RunningServer
from tests.server.test_models_api import wait_for
from tests.server.test_workers_api import registration

# Every spelling of the two flags that llama.cpp, llama-box or vLLM (argparse) would act on.
PUBLISHING = [
    ["--host 0.0.0.0"],
    ["--host=0.0.0.0"],
    ["--host", "0.0.0.0"],
    ["  --host\t0.0.0.0 "],
    ["--hos", "0.0.0.0"],  # argparse takes an unambiguous prefix
    ["--ctx-size", "2048", "--host=::"],
]
CLASHING = [["--port", "8080"], ["--port=8080"], ["--port 8080"], ["--por", "8080"]]


def model_body(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "local_path": "/nowhere/model.gguf", "replicas": 0, **fields}


async def test_host_and_port_parameters_are_refused_with_the_reason(admin: httpx.AsyncClient) -> None:
    for parameters in PUBLISHING + CLASHING:
        response = await admin.post("/v2/models", json=model_body("m", backend_parameters=parameters))
        assert response.status_code == 400, parameters
        message = response.json()["message"]
        flag = "--host" if parameters in PUBLISHING else "--port"
        assert f"the worker sets {flag} itself" in message and "remove it" in message, (parameters, message)
    assert (await admin.get("/v2/models")).json()["items"] == []


async def test_an_update_cannot_add_host_or_port(admin: httpx.AsyncClient) -> None:
    created = await admin.post("/v2/models", json=model_body("m", backend_parameters=["--ctx-size=2048"]))
    assert created.status_code == 201, created.text
    response = await admin.put(
        f"/v2/models/{created.json()['id']}", json={"backend_parameters": ["--host=x"]}
    )
    assert response.status_code == 400 and "the worker sets --host itself" in response.json()["message"]
    stored = (await admin.get(f"/v2/models/{created.json()['id']}")).json()
    assert stored["backend_parameters"] == ["--ctx-size=2048"]


async def test_parameters_and_variables_too_big_to_exec_are_refused(admin: httpx.AsyncClient) -> None:
    megabyte = "x" * (1024 * 1024)
    cases = [
        ({"backend_parameters": ["--chat-template", megabyte]}, f"at most {MAX_PARAMETER_BYTES} bytes each"),
        ({"backend_parameters": ["-v"] * (MAX_PARAMETERS + 1)}, f"at most {MAX_PARAMETERS} are accepted"),
        ({"backend_parameters": ["a" * 13000, "b" * 13000]}, "at most 24576 bytes together"),
        ({"env": {"BIG": megabyte}}, f"at most {MAX_VARIABLE_VALUE_BYTES} bytes each"),
        ({"env": {f"V{i}": "v" for i in range(300)}}, "at most 256"),
        ({"env": {f"V{i}": "v" * 16000 for i in range(5)}}, "at most 65536 bytes"),
        ({"env": {"NUL": "a\u0000b"}}, "contains a NUL character"),
        ({"env": {"N" * 300: "v"}}, "is invalid: use up to 256 letters"),
    ]
    for fields, expected in cases:
        response = await admin.post("/v2/models", json=model_body("m", **fields))
        assert response.status_code == 400, expected
        message = response.json()["message"]
        assert expected in message, (expected, message[:300])
        assert len(message) < 1000  # the refused value is quoted, not echoed
    fine = {"backend_parameters": ["--ctx-size=2048", "--chat-template", "t" * 8000], "env": {"A": "b"}}
    assert (await admin.post("/v2/models", json=model_body("ok", **fine))).status_code == 201


def test_flags_that_merely_resemble_host_or_port_are_allowed() -> None:
    check_backend_parameters(["--hostname-suffix", "x", "--ports-file", "y", "--hf-token", "t"])
    check_backend_parameters(["0.0.0.0", "--port-range-start"])  # a value, and a longer flag


@pytest.mark.parametrize("backend", ["llama-box", "vllm", "vox-box"])
def test_the_worker_gives_host_and_port_last_so_they_win(backend: str) -> None:
    model = spec(backend)
    model.backend_parameters = ["--host", "0.0.0.0"]  # stored before the API refused it
    argv = command(model, Executable("/bin/engine", "PATH"), port=40001).argv
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "40001"]


class RecordingClient:
    """The worker's view of the server: one model (as stored before the API checked it), reports kept."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.reports: list[ModelInstanceStateUpdate] = []

    async def get_model(self, model_id: int) -> dict[str, Any]:
        return self.spec

    async def report_instance(self, instance_id: int, update: ModelInstanceStateUpdate) -> None:
        self.reports.append(update)


@pytest.mark.parametrize(
    ("parameters", "env", "expected"),
    [
        (["--host", "0.0.0.0"], {}, "the worker sets --host itself"),
        (["--port=1"], {}, "the worker sets --port itself"),
        (["--chat-template", "x" * (1024 * 1024)], {}, f"at most {MAX_PARAMETER_BYTES} bytes each"),
        ([], {"HUGE": "x" * (1024 * 1024)}, f"at most {MAX_VARIABLE_VALUE_BYTES} bytes each"),
    ],
)
async def test_the_worker_refuses_stored_settings_it_cannot_run_safely(
    tmp_path: Path, parameters: list[str], env: dict[str, str], expected: str
) -> None:
    model_file = tmp_path / "model.gguf"
    model_file.write_bytes(b"GGUF")
    config = load_config({"data_dir": str(tmp_path / "data")}, {})
    spec = {
        "backend": "llama-box",
        "local_path": str(model_file),
        "backend_parameters": parameters,
        "env": env,
    }
    client = RecordingClient(spec)
    manager = ServeManager(config, lambda: 1, client, lambda: [])  # type: ignore[arg-type]
    instance = {
        "id": 7,
        "name": "m-1",
        "model_id": 3,
        "model_name": "m",
        "worker_id": 1,
        "worker_name": "w",
        "state": ModelInstanceState.SCHEDULED.value,
        "gpu_indexes": [],
        "placement": None,
    }
    manager.reconcile({7: instance})
    try:
        await wait_for(lambda: _reported(client, ModelInstanceState.ERROR), timeout=10)
    finally:
        await manager.shutdown()
    error = next(r for r in client.reports if r.state == ModelInstanceState.ERROR)
    assert "the model's settings cannot start an engine" in error.state_message
    assert expected in error.state_message and "PUT /v2/models/3" in error.state_message
    assert error.pid is None and not any(r.state == ModelInstanceState.STARTING for r in client.reports)


async def _reported(client: RecordingClient, state: ModelInstanceState) -> bool:
    await asyncio.sleep(0)
    return any(report.state == state for report in client.reports)


async def test_an_instance_whose_stored_settings_cannot_run_is_not_restarted(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("w", 1))
    created = await admin.post("/v2/models", json=model_body("stored", replicas=1))
    model_id = created.json()["id"]

    async def instance_of_model() -> ModelInstanceRow | None:
        async with server.ctx.session() as session:
            return (
                await session.execute(select(ModelInstanceRow).where(ModelInstanceRow.model_id == model_id))
            ).scalar()

    await wait_for(instance_of_model)
    async with server.ctx.session() as session:
        # As an older version stored it, and as a worker then reported it failed long ago.
        model = await session.get(ModelRow, model_id)
        assert model is not None
        model.backend_parameters = ["--host=0.0.0.0"]
        row = (
            await session.execute(select(ModelInstanceRow).where(ModelInstanceRow.model_id == model_id))
        ).scalar_one()
        row.worker_id = registered["id"]
        row.worker_name = "w"
        row.state = ModelInstanceState.ERROR.value
        row.state_message = "the engine exited with code 1"
        row.state_changed_at = utcnow() - timedelta(hours=1)
        await session.commit()

    async def refused() -> dict | None:
        items = (await admin.get("/v2/model-instances", params={"model_id": model_id})).json()["items"]
        return items[0] if items and items[0]["state_message"].startswith("not restarted") else None

    instance = await wait_for(refused)
    assert instance["state"] == "error" and instance["restart_count"] == 0
    assert "the worker sets --host itself" in instance["state_message"]
    assert f"PUT /v2/models/{model_id}" in instance["state_message"]
