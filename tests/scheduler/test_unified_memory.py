"""Unified memory (Apple silicon): VRAM and RAM are one pool, counted once, never overcommitted."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack.scheduler.candidates import NoPlacement, Placement
from gpustack.scheduler.place import place
from gpustack.scheduler.request import LlamaBoxNeed, PlacementRequest
from tests.scheduler.fixtures import GiB, claim, deepseek_r1_iq2, estimate, llama_8b, mac_studio, worker


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("models")
    return {"r1": deepseek_r1_iq2(directory), "8b": llama_8b(directory)}


def gguf(path: Path, *parameters: str, **kwargs) -> PlacementRequest:
    return PlacementRequest("m", "llama-box", LlamaBoxNeed(estimate(path, *parameters)), **kwargs)


def test_a_mac_refuses_a_partial_offload_that_overcommits_its_one_pool(models: dict[str, Path]) -> None:
    # Before: 60 layers on the GPU (fits its 179 GiB) plus the rest in RAM (fits its 178 GiB), checked
    # apart, though both come from the same 178 GiB.
    mac = mac_studio()
    claim(mac, ram=12 * GiB)  # another instance already holds 12 GiB of the pool
    result = place(gguf(models["r1"]), [mac])
    assert isinstance(result, NoPlacement)
    assert result.reasons == [
        "worker mac-1, GPU 0 (Apple M2 Ultra): 178.0 GiB allocatable, needs 181.2 GiB",
        "worker mac-1: unified memory: 164.7 GiB on its GPU and 17.2 GiB of RAM together exceed the "
        "178.0 GiB allocatable",
        "worker mac-1: 178.0 GiB RAM allocatable, needs 181.7 GiB to run on the CPU",
    ]


def test_a_mac_whose_gpu_limit_is_below_the_pool_offloads_what_the_gpu_may_take(
    models: dict[str, Path],
) -> None:
    # Metal lets the GPU use about 75 % of a Mac's memory (recommendedMaxWorkingSetSize).
    mac = worker(3, "mac-1", [("mps", "Apple M2 Ultra", 144 * GiB)], 192 * GiB, os="darwin", unified=True)
    result = place(gguf(models["r1"]), [mac])
    assert isinstance(result, Placement), result.message()
    assert result.mode == "partial-offload"
    gpu = result.main.claim.vram[0]
    assert gpu <= 143 * GiB and gpu + result.main.claim.ram <= 190 * GiB
    result.apply()
    assert mac.ram_free >= 0 and mac.vram_free[0] >= 0


def test_unified_memory_never_goes_negative_however_many_replicas(models: dict[str, Path]) -> None:
    mac = mac_studio()
    placed = 0
    while isinstance(result := place(gguf(models["8b"]), [mac]), Placement):
        result.apply()
        placed += 1
        assert mac.ram_free >= 0 and mac.vram_free[0] >= 0
    need = estimate(models["8b"]).full_offload
    assert placed == int(190 * GiB // (need.vram + need.ram))  # the pool, counted once per claim


def test_a_gpu_claim_on_a_mac_is_ram_too(models: dict[str, Path]) -> None:
    mac = mac_studio()
    result = place(gguf(models["8b"]), [mac])
    assert isinstance(result, Placement) and result.mode == "gpu"
    mac.add_claim(result.main.claim)
    claimed = result.main.claim.vram[0] + result.main.claim.ram
    assert mac.ram_free == 190 * GiB - claimed and mac.vram_free[0] == 190 * GiB - claimed
