"""A local path that only workers have: the server lists it and reads its header through a worker's real
routes (with the worker's credential) instead of leaving the instance pending."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException, Request

from gpustack.schemas.models import ModelSpec
from gpustack.server import requirements as requirements_module
from gpustack.server.requirements import EstimateError, Requirements
from gpustack.sources.base import SourceError, SourceSettings
from gpustack.sources.worker_files import WorkerEndpoint, read_on_workers
from gpustack.utils.uvicorn_server import bind_socket, make_server
from gpustack.worker.files.api import files_router
from gpustack.worker.files.manager import FileManager
from tests.conftest import free_port

CREDENTIAL = "worker-credential"


@pytest.fixture
async def worker(tmp_path: Path):
    async def require_token(request: Request) -> None:
        if request.headers.get("authorization") != f"Bearer {CREDENTIAL}":
            raise HTTPException(401, "this worker accepts only its server")

    app = FastAPI()
    app.include_router(
        files_router(require_token, FileManager(str(tmp_path / "cache"), SourceSettings(), None))
    )
    port = free_port()
    server = make_server(app)
    task = asyncio.create_task(server.serve(sockets=[bind_socket("127.0.0.1", port, "--worker-port")]))
    for _ in range(500):  # uvicorn says nothing but its `started` flag
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield WorkerEndpoint("w1", f"http://127.0.0.1:{port}", CREDENTIAL)
    server.should_exit = True
    await task


async def test_the_header_of_a_file_only_a_worker_has_is_read_through_it(
    worker, smollm2, monkeypatch
) -> None:
    stranger = WorkerEndpoint("w0", worker.url, "wrong")  # answers 401: not the one that has it
    reader = await asyncio.to_thread(read_on_workers, smollm2, (stranger, worker))
    (header,) = await asyncio.to_thread(reader.gguf_shards)
    assert header.architecture == "llama" and reader.where.startswith(f"{smollm2} on worker w1")
    # The server's estimate, when its own disk lacks the file:
    monkeypatch.setattr(requirements_module, "_stat", lambda path: None)
    spec = ModelSpec.model_validate({"local_path": smollm2, "backend_parameters": ["--ctx-size=2048"]})
    requirement = await Requirements().of(spec, [worker])
    assert "weights" in requirement.description


async def test_a_file_no_worker_has_is_named_with_the_workers_asked(worker, monkeypatch) -> None:
    with pytest.raises(SourceError, match=r"cannot read /nowhere/m.gguf: .*\(asked: w1\); put the model"):
        await asyncio.to_thread(read_on_workers, "/nowhere/m.gguf", (worker,))
    monkeypatch.setattr(requirements_module, "_stat", lambda path: None)
    with pytest.raises(EstimateError, match="asked: none is ready"):
        await Requirements().of(ModelSpec.model_validate({"local_path": "/nowhere/m.gguf"}), [])


async def test_the_worker_reads_only_model_files_for_its_server(worker, tmp_path) -> None:
    import httpx

    secret = tmp_path / "secret.txt"
    secret.write_text("not a model")
    async with httpx.AsyncClient(base_url=worker.url) as http:
        headers = {"Authorization": f"Bearer {CREDENTIAL}"}
        raw = await http.get("/model-files/raw", params={"path": str(secret)}, headers=headers)
        assert raw.status_code == 404
        assert (await http.get("/model-files/listing", params={"path": str(tmp_path)})).status_code == 401
