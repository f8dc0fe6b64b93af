"""Partial offload over every GPU set (one worker's GPUs, GPUs of several workers through RPC), and
which partial offload wins: the least loaded worker, then the most layers on GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack.scheduler.candidates import NoPlacement, Placement
from gpustack.scheduler.place import place
from gpustack.scheduler.request import LlamaBoxNeed, PlacementRequest
from gpustack.schemas.models import PlacementStrategy
from tests.scheduler.fixtures import (
    GiB,
    a100_box,
    claim,
    deepseek_r1_bf16,
    deepseek_r1_iq2,
    estimate,
    llama_70b,
    worker,
)

RTX3090 = ("cuda", "NVIDIA GeForce RTX 3090", 24 * GiB)
RTX4090 = ("cuda", "NVIDIA GeForce RTX 4090", 24 * GiB)
A4000 = ("cuda", "NVIDIA RTX A4000", 16 * GiB)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("models")
    return {
        "r1-iq2": deepseek_r1_iq2(directory),
        "r1-bf16": deepseek_r1_bf16(directory),
        "70b": llama_70b(directory),
    }


def gguf(path: Path, *parameters: str, **kwargs) -> PlacementRequest:
    return PlacementRequest("m", "llama-box", LlamaBoxNeed(estimate(path, *parameters)), **kwargs)


def placed(result: Placement | NoPlacement) -> Placement:
    assert isinstance(result, Placement), result.message()
    return result


def layers_on(result: Placement) -> list[int]:
    return list(result.layout.tensor_split)


def assert_claims_fit_and_match_the_split(result: Placement, path: Path, *parameters: str) -> None:
    """Each claim is what llama.cpp allocates for the engine arguments, and no more than was allocatable."""
    est = estimate(path, *parameters)
    counts = layers_on(result) if result.layout.tensor_split else [result.layout.gpu_layers]
    rpc = len(result.layout.rpc)
    split = est.split(counts, rpc_devices=rpc)
    claimed = [
        assignment.claim.vram[index]
        for assignment in (*result.subordinates, result.main)
        for index in assignment.gpu_indexes
    ]
    assert sorted(claimed) == sorted(split.vram)
    assert result.main.claim.ram == split.ram + est.growth_bytes
    for assignment in (result.main, *result.subordinates):
        for index, amount in assignment.claim.vram.items():
            assert amount <= assignment.worker.vram_free[index]
        assert assignment.claim.ram <= assignment.worker.ram_free


def test_deepseek_r1_2bit_on_an_8x3090_rig_spreads_most_layers_over_all_eight_gpus(
    models: dict[str, Path],
) -> None:
    rig = worker(1, "rig", [RTX3090] * 8, 256 * GiB)
    result = placed(place(gguf(models["r1-iq2"]), [rig]))
    assert result.mode == "partial-offload"
    assert len(result.main.gpu_indexes) == 8 and result.main.layers == layers_on(result)
    assert result.main.claim.offload_layers == 57 == result.layout.gpu_layers  # of 62
    assert_claims_fit_and_match_the_split(result, models["r1-iq2"])
    assert result.summary.startswith("partial-offload: 57 of 62 layers on GPUs, 5 on the CPU; worker rig (")
    assert "GPU 7 (NVIDIA GeForce RTX 3090) 8 layers, 22.5 GiB" in result.summary


def test_70b_q4_on_two_16gib_gpus_puts_layers_on_both(models: dict[str, Path]) -> None:
    box = worker(1, "pc", [A4000] * 2, 128 * GiB)
    result = placed(place(gguf(models["70b"]), [box]))
    assert result.mode == "partial-offload" and sorted(result.main.gpu_indexes) == [0, 1]
    assert layers_on(result) == [27, 26] and result.main.claim.offload_layers == 53  # one GPU alone: 26
    assert_claims_fit_and_match_the_split(result, models["70b"])


def test_partial_offload_uses_gpus_of_another_worker_through_rpc(models: dict[str, Path]) -> None:
    first = worker(1, "h1", [RTX4090], 512 * GiB)
    second = worker(2, "h2", [RTX4090], 512 * GiB)
    result = placed(place(gguf(models["r1-iq2"]), [first, second]))
    assert result.mode == "rpc-partial-offload"
    assert result.layout.rpc == ["10.0.0.2:40064"] and layers_on(result) == [7, 8]
    assert result.main.worker.name == "h1" and result.subordinates[0].worker.name == "h2"
    assert_claims_fit_and_match_the_split(result, models["r1-iq2"])
    result.apply()
    assert second.rpc_lent == {0}  # its RPC server now serves this instance only


def test_partial_offload_stays_on_one_worker_when_distributed_inference_is_off(
    models: dict[str, Path],
) -> None:
    cluster = [worker(1, "h1", [RTX4090], 512 * GiB), worker(2, "h2", [RTX4090], 512 * GiB)]
    request = gguf(models["r1-iq2"], distributed_inference_across_workers=False)
    result = placed(place(request, cluster))
    assert result.mode == "partial-offload" and not result.subordinates and not result.layout.rpc
    assert result.main.claim.offload_layers == 8


def test_spread_on_an_idle_cluster_puts_the_most_layers_on_gpus(models: dict[str, Path]) -> None:
    # Before: one output layer on the 3090 and 1.2 TiB in RAM, because it left the most layers on the CPU.
    rtx = worker(1, "rtx3090", [RTX3090], 2048 * GiB)
    result = placed(place(gguf(models["r1-bf16"]), [rtx, a100_box(2, "a100")]))
    assert result.main.worker.name == "a100" and len(result.main.gpu_indexes) == 8
    assert result.main.claim.offload_layers > 20


def test_spread_picks_the_least_loaded_worker_before_more_gpu_layers(models: dict[str, Path]) -> None:
    busy = worker(1, "busy", [RTX3090] * 8, 256 * GiB)
    quiet = worker(2, "quiet", [RTX3090] * 4, 256 * GiB)
    claim(busy, ram=GiB)  # one small instance already runs there
    request = gguf(models["r1-iq2"], distributed_inference_across_workers=False)
    result = placed(place(request, [busy, quiet]))
    assert result.main.worker.name == "quiet" and result.main.claim.offload_layers == 29  # busy: 57


def test_binpack_partial_offload_takes_the_most_layers_on_gpus(models: dict[str, Path]) -> None:
    small = worker(1, "small", [RTX3090] * 2, 256 * GiB)
    large = worker(2, "large", [RTX3090] * 8, 256 * GiB)
    request = gguf(
        models["r1-iq2"],
        placement_strategy=PlacementStrategy.BINPACK,
        distributed_inference_across_workers=False,
    )
    result = placed(place(request, [small, large]))
    assert result.main.worker.name == "large" and result.main.claim.offload_layers == 57


def test_a_worker_that_cannot_hold_the_cpu_layers_says_how_much_ram_they_need(
    models: dict[str, Path],
) -> None:
    rig = worker(1, "rig", [RTX3090] * 2, 64 * GiB)
    result = place(gguf(models["r1-iq2"]), [rig])
    assert isinstance(result, NoPlacement)
    assert (
        "worker rig: 62.0 GiB RAM allocatable, needs 137.8 GiB with 47 of 62 layers on the CPU and the "
        "rest on 2 GPU(s)" in result.reasons
    )
