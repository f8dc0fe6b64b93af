"""The ModelFile resource: workers record and report their copies; administrators list them, cannot remove
one a model's instance uses, retry one in error; the catalog is served as its YAML says."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from gpustack.server.db.tables import ModelInstanceRow
from tests.conftest import free_port
from tests.server.conftest import RunningServer
from tests.server.test_workers_api import registration

SOURCE = {
    "source": "huggingface",
    "huggingface_repo_id": "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
    "huggingface_filename": "*q4_k_m.gguf",
}


async def _worker_with_a_file(
    server: RunningServer, admin: httpx.AsyncClient
) -> tuple[httpx.AsyncClient, dict, dict]:
    worker = server.worker_client()
    registered = await server.register(worker, registration("files", free_port()))
    model = await admin.post("/v2/models", json={"name": "qwen", **SOURCE})
    assert model.status_code == 201, model.text
    claimed = await worker.post("/v2/model-files", json={**SOURCE, "model_id": model.json()["id"]})
    assert claimed.status_code == 200, claimed.text
    for _ in range(200):  # the model's controller creates its instance
        async with server.ctx.session() as session:
            if (await session.execute(select(ModelInstanceRow))).scalar() is not None:
                break
        await asyncio.sleep(0.05)
    return worker, registered, claimed.json()


async def _set_instance(server: RunningServer, **fields: object) -> None:
    """Set the model's one instance's fields as a worker's reports would; the scheduler may be writing the
    same row (its analysis of the model), which the row's version refuses: then again, on the new row."""
    for _ in range(50):
        try:
            async with server.ctx.session() as session:
                instance = (await session.execute(select(ModelInstanceRow))).scalar_one()
                for name, value in fields.items():
                    setattr(instance, name, value)
                await session.commit()
            return
        except StaleDataError:
            await asyncio.sleep(0.05)
    raise AssertionError("the instance kept changing under the test")


async def test_a_worker_records_and_reports_its_copy_and_admins_see_it(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    worker, registered, file = await _worker_with_a_file(server, admin)
    try:
        assert file["state"] == "downloading" and file["worker_name"] == "files"
        assert file["cache_key"] == "huggingface/Qwen/Qwen2.5-0.5B-Instruct-GGUF/*q4_k_m.gguf"
        assert file["model_names"] == ["qwen"]
        again = await worker.post("/v2/model-files", json={**SOURCE, "model_id": 1})
        assert again.json()["id"] == file["id"]  # one row per (worker, source)
        progress = {"state": "downloading", "size": 400, "downloaded_bytes": 100, "download_speed": 50}
        reported = await worker.put(
            f"/v2/model-files/{file['id']}/state", json={**progress, "download_progress": 25}
        )
        assert reported.status_code == 200 and reported.json()["download_progress"] == 25
        listed = (await admin.get("/v2/model-files", params={"worker_id": registered["id"]})).json()["items"]
        assert [(f["id"], f["downloaded_bytes"], f["download_speed"]) for f in listed] == [
            (file["id"], 100, 50)
        ]
        assert (await admin.get("/v2/model-files", params={"state": "ready"})).json()["items"] == []
        # A worker reports only its own files.
        other = server.worker_client()
        async with other:
            await server.register(other, registration("other", free_port()))
            refused = await other.put(f"/v2/model-files/{file['id']}/state", json={"state": "ready"})
        assert refused.status_code == 403
    finally:
        await worker.aclose()


async def test_files_in_use_are_not_removed_and_the_refusal_names_the_model(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    worker, registered, file = await _worker_with_a_file(server, admin)
    try:
        await _set_instance(server, worker_id=registered["id"], worker_name="files", state="downloading")
        refused = await admin.delete(f"/v2/model-files/{file['id']}")
        assert refused.status_code == 409
        assert refused.json()["message"].startswith(
            f"model file {file['id']} is in use by model qwen on worker files"
        )
        # Not in use (the model scaled to nothing): the worker is asked to remove them; it is away here.
        await _set_instance(server, state="error")
        away = await admin.delete(f"/v2/model-files/{file['id']}")
        assert away.status_code == 503 and "cannot reach worker files" in away.json()["message"]
        assert (await admin.get(f"/v2/model-files/{file['id']}")).status_code == 200  # kept: nothing removed
    finally:
        await worker.aclose()


async def test_only_files_in_error_are_retried_and_their_instances_restart(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    worker, registered, file = await _worker_with_a_file(server, admin)
    try:
        refused = await admin.post(f"/v2/model-files/{file['id']}/retry")
        assert (
            refused.status_code == 409 and "only files in error can be retried" in refused.json()["message"]
        )
        failed = {"state": "error", "state_message": "checksum mismatch"}
        assert (await worker.put(f"/v2/model-files/{file['id']}/state", json=failed)).status_code == 200
        await _set_instance(server, worker_id=registered["id"], worker_name="files", state="error")
        retried = await admin.post(f"/v2/model-files/{file['id']}/retry")
        assert retried.status_code == 200 and retried.json()["state"] == "downloading"
        async with server.ctx.session() as session:
            instance = (await session.execute(select(ModelInstanceRow))).scalar_one()
        assert instance.state == "scheduled" and "retrying the download" in instance.state_message
    finally:
        await worker.aclose()


async def test_the_catalog_lists_models_with_their_sources(admin: httpx.AsyncClient) -> None:
    catalog = (await admin.get("/v2/model-catalog")).json()["items"]
    qwen = next(entry for entry in catalog if entry["name"] == "Qwen2.5 0.5B Instruct")
    assert {v["source"] for v in qwen["variants"]} == {"huggingface", "ollama_library", "modelscope"}
    # A variant is what POST /v2/models takes, with a name.
    variant = {k: v for k, v in qwen["variants"][0].items() if k not in ("quantization", "size", "file_size")}
    created = await admin.post("/v2/models", json={"name": "from-catalog", **variant})
    assert created.status_code == 201, created.text
    found = (await admin.get("/v2/model-catalog", params={"category": "embedding"})).json()["items"]
    assert found and all("embedding" in entry["categories"] for entry in found)


def test_a_catalog_file_is_checked_entry_by_entry(tmp_path: Path) -> None:
    import pytest

    from gpustack.sources.catalog import CatalogError, load_catalog

    path = tmp_path / "catalog.yaml"
    path.write_text("- name: bad\n  variants:\n    - {source: huggingface, backend: llama-box}\n")
    with pytest.raises(CatalogError, match="huggingface_repo_id is required"):
        load_catalog(str(path))
    path.write_text(
        "- name: ok\n  variants:\n    - {source: ollama_library, ollama_library_model_name: 'qwen2.5:0.5b'}\n"
    )
    assert load_catalog(str(path)).items[0].variants[0].ollama_library_model_name == "qwen2.5:0.5b"
