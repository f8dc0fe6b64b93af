"""GET /v2/backends: what each worker has of each backend, from the status the worker reports."""

from __future__ import annotations

from pathlib import Path

import httpx

from gpustack.worker.engines.inventory import inventory
from gpustack.worker.engines.resolve import Directories
from tests.server.conftest import RunningServer
from tests.server.test_workers_api import registration


async def test_backends_lists_each_workers_versions_defaults_and_executables(
    server: RunningServer, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pinned = bin_dir / "vllm_v0.8.5.post1"  # the FAQ's custom executable
    pinned.write_text("#!/bin/sh\n")
    pinned.chmod(0o755)
    managed = tmp_path / "backends" / "vox-box" / "0.0.21"
    managed.mkdir(parents=True)
    (managed / ".gpustack-complete").write_text("{}\n")
    (tmp_path / "backends" / "vox-box" / ".tmp-0.0.22-99").mkdir()  # an install in progress: not listed
    found = inventory(Directories(bin_dir, tmp_path / "backends"), None)
    body = registration("gpu-1", 1)
    body["status"]["backends"] = [entry.model_dump(mode="json") for entry in found]
    async with server.worker_client() as joining:
        await server.register(joining, body)

    response = await admin.get("/v2/backends")
    assert response.status_code == 200, response.text
    items = {item["backend"]: item for item in response.json()["items"]}
    assert set(items) == {"llama-box", "vllm", "vox-box", "ascend-mindie", "custom"}
    vllm = items["vllm"]
    assert vllm["worker_name"] == "gpu-1" and vllm["default_version"] == "0.32.0"
    assert vllm["versions"] == [{"version": "v0.8.5.post1", "origin": "bin-dir", "path": str(pinned)}]
    assert vllm["executable"] is None  # the default version is installed on first use
    assert items["vox-box"]["versions"] == [{"version": "0.0.21", "origin": "managed", "path": str(managed)}]
    only = (await admin.get("/v2/backends", params={"backend": "vox-box", "worker": "gpu-1"})).json()["items"]
    assert [item["backend"] for item in only] == ["vox-box"]
    assert (await admin.get("/v2/backends", params={"worker": "nobody"})).json()["items"] == []
