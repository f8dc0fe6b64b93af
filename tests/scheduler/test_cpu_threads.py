"""CPU threads as a claim: engines that compute on the CPU may not oversubscribe a worker's cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack.scheduler.candidates import NoPlacement, Placement
from gpustack.scheduler.cpu_threads import default_threads, explicit_threads, thread_claim
from gpustack.scheduler.place import place
from gpustack.scheduler.request import LlamaBoxNeed, PlacementRequest
from gpustack.schemas.models import ResourceClaim
from gpustack.schemas.placement import LayerLayout
from tests.estimate.test_gguf import write_model
from tests.scheduler.fixtures import GiB, estimate, llama_70b, rtx4090_box, worker


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("models")
    # a small model, as SmolLM2-135M is: every replica fits a laptop's RAM many times over
    tiny = write_model(directory / "tiny.gguf", n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=512)
    return {"tiny": tiny, "70b": llama_70b(directory)}


def gguf(path: Path, *parameters: str, **kwargs) -> PlacementRequest:
    return PlacementRequest("m", "llama-box", LlamaBoxNeed(estimate(path, *parameters)), **kwargs)


def replicas(
    request: PlacementRequest, workers: list, count: int
) -> tuple[list[Placement], NoPlacement | None]:
    done = []
    for _ in range(count):
        result = place(request, workers)
        if isinstance(result, NoPlacement):
            return done, result
        result.apply()
        done.append(result)
    return done, None


def test_64_cpu_replicas_on_a_2_core_host_stop_at_twice_its_cores_with_a_reason(
    models: dict[str, Path],
) -> None:
    # Before: all 64 were placed; 64 llama.cpp engines on 2 cores starved the server and each other.
    host = worker(1, "laptop", [], 16 * GiB, cores=2)
    done, refusal = replicas(gguf(models["tiny"]), [host], 64)
    assert len(done) == 2 and refusal is not None
    assert [p.main.claim.cpu_threads for p in done] == [2, 2] and host.cpu_threads_free == 0
    assert refusal.reasons == [
        "worker laptop: 0 of 4 CPU threads allocatable (2 cores x 2), needs 2 for llama.cpp's --threads"
    ]
    assert refusal.hints[0] == (
        "a smaller --threads (-t) in the backend parameters lets more instances share a worker's cores: each "
        "one that computes on the CPU claims its threads, at most 2 per logical core in all"
    )


def test_the_thread_claim_is_passed_to_the_engine_so_it_is_what_runs(models: dict[str, Path]) -> None:
    result = place(gguf(models["tiny"]), [worker(1, "cpu-1", [], 64 * GiB, cores=16)])
    assert isinstance(result, Placement)
    assert result.layout == LayerLayout(gpu_layers=0, threads=8) and result.main.claim.cpu_threads == 8
    assert result.summary == "cpu: worker cpu-1 (RAM 66.4 MiB, 8 CPU threads)"


def test_the_users_threads_are_claimed_as_given_and_not_repeated(models: dict[str, Path]) -> None:
    host = worker(1, "laptop", [], 16 * GiB, cores=2)
    done, refusal = replicas(gguf(models["tiny"], "-t", "1"), [host], 8)
    assert len(done) == 4 and all(p.layout.threads is None for p in done)
    assert refusal is not None
    batch = place(gguf(models["tiny"], "-t", "1", "-tb", "4"), [worker(2, "w", [], 16 * GiB, cores=8)])
    assert isinstance(batch, Placement) and batch.main.claim.cpu_threads == 4  # prompt processing uses 4
    only_batch = place(gguf(models["tiny"], "-tb", "2"), [worker(3, "w", [], 16 * GiB, cores=16)])
    assert isinstance(only_batch, Placement) and only_batch.main.claim.cpu_threads == 8
    assert only_batch.layout.threads == 8  # generation still runs llama.cpp's default


def test_engines_with_every_layer_on_gpus_claim_no_cpu_threads(models: dict[str, Path]) -> None:
    box = worker(1, "gpu-a", [("cuda", "NVIDIA GeForce RTX 4090", 24 * GiB)] * 2, 64 * GiB, cores=2)
    done, _ = replicas(gguf(models["tiny"]), [box], 6)
    assert len(done) == 6 and all(p.main.claim.cpu_threads == 0 and p.mode == "gpu" for p in done)


def test_a_partial_offload_claims_threads_for_its_cpu_layers(models: dict[str, Path]) -> None:
    result = place(gguf(models["70b"]), [rtx4090_box()])
    assert isinstance(result, Placement) and result.mode == "multi-gpu" and result.main.claim.cpu_threads == 0
    single = worker(1, "one", [("cuda", "NVIDIA GeForce RTX 4090", 24 * GiB)], 128 * GiB, cores=12)
    partial = place(gguf(models["70b"]), [single])
    assert isinstance(partial, Placement) and partial.mode == "partial-offload"
    assert partial.main.claim.cpu_threads == 6 and partial.layout.threads == 6


def test_default_threads_follow_llama_cpp() -> None:
    # common_cpu_get_num_physical_cores without a topology: every core up to 4, else half
    assert [default_threads(n) for n in (1, 2, 4, 8, 64)] == [1, 2, 4, 4, 32]
    assert thread_claim(0, None, 16) == 16  # -t 0 (or -1): llama.cpp takes every logical core
    assert thread_claim(None, 12, 16) == 12 and thread_claim(None, 2, 16) == 8  # -tb beside the default
    assert thread_claim(None, None, 0) == 0  # a worker that does not report its cores: no claim, no limit
    assert explicit_threads(None, 16) == 8 and explicit_threads(4, 16) is None


def test_claims_stored_before_cpu_threads_existed_still_load() -> None:
    old = ResourceClaim.model_validate({"ram": 1, "vram": {"0": 2}, "offload_layers": 3, "total_layers": 3})
    assert old.cpu_threads == 0 and old.vram == {0: 2}
