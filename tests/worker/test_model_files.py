"""A worker's model files against the hub stand-in: downloads resumed from what is on disk, checked against
the hub's sha256, one copy per source however many instances or processes ask, and space checked first."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gpustack.schemas.model_files import ModelFileClaim, ModelFileState, ModelFileStateUpdate
from gpustack.schemas.models import ModelSpec
from gpustack.sources.base import RemoteFile, SourceSettings
from gpustack.worker.files import cache, download
from gpustack.worker.files.download import DownloadError, Progress, client, download_file
from gpustack.worker.files.manager import FileManager, FilesUnavailable
from tests.fixtures.hubs import HubState, hub_server

SIZE = 3 * 1024 * 1024 + 17


@pytest.fixture
def hub(tmp_path: Path):
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "model-Q4_K_M.gguf").write_bytes(bytes(i % 251 for i in range(SIZE)))
    (folder / "README.md").write_text("a model\n")
    state = HubState(repos={"org/model-GGUF": str(folder)})
    with hub_server(state) as endpoint:
        yield state, endpoint, folder


def _file(state: HubState, endpoint: str, folder: Path) -> RemoteFile:
    sha = state.sha256(str(folder / "model-Q4_K_M.gguf"))
    return RemoteFile("model-Q4_K_M.gguf", f"{endpoint}/cdn/org/model-GGUF/model-Q4_K_M.gguf", SIZE, sha)


def _fetch(file: RemoteFile, target: Path) -> None:
    with client({}) as http:
        download_file(file, target, http, Progress(), {})


def test_a_dropped_connection_is_resumed_from_the_bytes_received(tmp_path, hub, monkeypatch) -> None:
    state, endpoint, folder = hub
    monkeypatch.setattr(download, "RETRY_PAUSE_SECONDS", 0.01)
    state.fail_after["model-Q4_K_M.gguf"] = 1_000_000
    target = tmp_path / "model-Q4_K_M.gguf"
    _fetch(_file(state, endpoint, folder), target)
    assert target.read_bytes() == (folder / "model-Q4_K_M.gguf").read_bytes()
    assert state.served_by_file["model-Q4_K_M.gguf"] == SIZE  # nothing sent twice


def test_a_part_left_by_a_killed_download_is_resumed_not_restarted(tmp_path, hub) -> None:
    state, endpoint, folder = hub
    target = tmp_path / "model-Q4_K_M.gguf"
    (tmp_path / "model-Q4_K_M.gguf.part").write_bytes((folder / "model-Q4_K_M.gguf").read_bytes()[:2_000_000])
    _fetch(_file(state, endpoint, folder), target)
    assert target.read_bytes() == (folder / "model-Q4_K_M.gguf").read_bytes()
    assert state.served_by_file["model-Q4_K_M.gguf"] == SIZE - 2_000_000
    assert not (tmp_path / "model-Q4_K_M.gguf.part").exists()


def test_a_server_that_ignores_ranges_gets_the_file_from_the_start(tmp_path, hub) -> None:
    state, endpoint, folder = hub
    state.ignore_range = True
    (tmp_path / "model-Q4_K_M.gguf.part").write_bytes(b"x" * 1000)  # not even the right bytes
    _fetch(_file(state, endpoint, folder), tmp_path / "model-Q4_K_M.gguf")
    assert (tmp_path / "model-Q4_K_M.gguf").read_bytes() == (folder / "model-Q4_K_M.gguf").read_bytes()


def test_a_corrupted_download_fails_its_checksum_and_leaves_nothing(tmp_path, hub) -> None:
    state, endpoint, folder = hub
    state.corrupt_once.add("model-Q4_K_M.gguf")
    (tmp_path / "cache").mkdir()
    target = tmp_path / "cache" / "model-Q4_K_M.gguf"
    with pytest.raises(DownloadError, match="checksum mismatch .*the damaged copy was removed"):
        _fetch(_file(state, endpoint, folder), target)
    assert list((tmp_path / "cache").iterdir()) == []
    _fetch(_file(state, endpoint, folder), target)  # the retry starts clean
    assert target.read_bytes() == (folder / "model-Q4_K_M.gguf").read_bytes()


def _same(path: str, original: Path) -> bool:
    return Path(path).read_bytes() == original.read_bytes()


def _files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".gguf", ".part")]


def _exists(path: str | Path) -> bool:
    return Path(path).exists()


class Server:
    """What a FileManager tells the server, recorded."""

    def __init__(self) -> None:
        self.claims: list[ModelFileClaim] = []
        self.reports: list[ModelFileStateUpdate] = []

    async def claim_model_file(self, claim: ModelFileClaim) -> dict[str, Any]:
        self.claims.append(claim)
        return {"id": 1}

    async def report_model_file(self, file_id: int, update: ModelFileStateUpdate) -> None:
        self.reports.append(update)


def _spec(pattern: str = "*q4_k_m.gguf") -> ModelSpec:
    return ModelSpec.model_validate(
        {"source": "huggingface", "huggingface_repo_id": "org/model-GGUF", "huggingface_filename": pattern}
    )


async def test_instances_and_processes_asking_for_one_source_share_one_download(tmp_path, hub) -> None:
    state, endpoint, folder = hub
    state.throttle = 2 * 1024 * 1024  # long enough to be reported while it runs
    settings = SourceSettings.of(None, {"HF_ENDPOINT": endpoint})
    server = Server()
    first, second = FileManager(str(tmp_path), settings, server), FileManager(str(tmp_path), settings, server)
    seen: list[str] = []

    async def listener(message: str) -> None:
        seen.append(message)

    # Two instances in one worker, and a second gpustack process on the same machine and cache.
    results = await asyncio.gather(
        first.ensure(_spec(), 1, listener), first.ensure(_spec(), 2), second.ensure(_spec(), 3)
    )
    assert len({r.main for r in results}) == 1 and _same(results[0].main, folder / "model-Q4_K_M.gguf")
    assert state.served_by_file["model-Q4_K_M.gguf"] == SIZE
    assert any(m.startswith("downloading huggingface org/model-GGUF *q4_k_m.gguf: ") for m in seen)
    assert server.reports[-1].state == ModelFileState.READY and server.reports[-1].resolved_paths == [
        results[0].main
    ]
    assert any(r.state == ModelFileState.DOWNLOADING and r.download_speed > 0 for r in server.reports)


async def test_a_disk_too_small_is_refused_before_a_byte_is_written(tmp_path, hub, monkeypatch) -> None:
    state, endpoint, _ = hub
    monkeypatch.setattr(cache, "free_bytes", lambda path: 10 * 1024 * 1024)
    server = Server()
    manager = FileManager(str(tmp_path), SourceSettings.of(None, {"HF_ENDPOINT": endpoint}), server)
    with pytest.raises(
        FilesUnavailable, match=r"it needs 3.0 MiB more \(3.0 MiB in all\) and .* has 10.0 MiB free"
    ):
        await manager.ensure(_spec(), 1)
    assert server.reports[-1].state == ModelFileState.ERROR
    assert state.served_by_file["model-Q4_K_M.gguf"] == 0
    assert not _files_in(tmp_path / "cache")


async def test_removing_a_source_keeps_files_another_source_still_lists(tmp_path, hub) -> None:
    _, endpoint, _ = hub
    manager = FileManager(str(tmp_path), SourceSettings.of(None, {"HF_ENDPOINT": endpoint}), Server())
    by_pattern = await manager.ensure(_spec(), 1)
    by_name = await manager.ensure(_spec("model-Q4_K_M.gguf"), 2)
    assert by_pattern.main == by_name.main
    await manager.remove("huggingface/org/model-GGUF/*q4_k_m.gguf")
    assert _exists(by_name.main)
    assert cache.read_manifest(str(tmp_path), "huggingface/org/model-GGUF/*q4_k_m.gguf") is None
    await manager.remove("huggingface/org/model-GGUF/model-Q4_K_M.gguf")
    assert not _exists(by_name.main) and not _exists(tmp_path / "huggingface")


async def test_a_running_download_shows_in_the_workers_metrics_until_it_completes(tmp_path, hub) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from gpustack.metrics.worker import WorkerMetrics

    state, endpoint, folder = hub
    state.throttle = 1024 * 1024  # about 3 s
    manager = FileManager(str(tmp_path), SourceSettings.of(None, {"HF_ENDPOINT": endpoint}), Server())
    metrics = WorkerMetrics(lambda: "w1", lambda: [], lambda: [], manager.in_progress)

    async def scrape() -> dict[tuple[str, str], float]:
        text = (await metrics.render()).decode()
        return {
            (sample.name, sample.labels.get("model_file", "")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("gpustack_worker_download")
        }

    running = asyncio.create_task(manager.ensure(_spec(), 1))
    what = "huggingface org/model-GGUF *q4_k_m.gguf"
    try:
        found: dict[tuple[str, str], float] = {}
        for _ in range(200):
            found = await scrape()
            if found.get(("gpustack_worker_download_total_bytes", what)):
                break
            await asyncio.sleep(0.02)
        assert found[("gpustack_worker_downloads_in_progress", "")] == 1
        assert found[("gpustack_worker_download_total_bytes", what)] == SIZE
        assert 0 <= found[("gpustack_worker_download_bytes", what)] < SIZE
        await running
        assert await scrape() == {("gpustack_worker_downloads_in_progress", ""): 0}
    finally:
        running.cancel()
        await metrics.aclose()
