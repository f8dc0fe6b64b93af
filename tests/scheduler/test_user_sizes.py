"""The user's own sizes drive placement: llama.cpp's -ngl, vLLM's and MindIE's parallel sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack.estimate.mindie import estimate_mindie, parse_mindie_options
from gpustack.estimate.safetensors import ModelFiles
from gpustack.estimate.vllm import estimate_vllm, parse_vllm_options
from gpustack.scheduler.candidates import NoPlacement, Placement
from gpustack.scheduler.needs import mindie_need, vllm_need
from gpustack.scheduler.place import place
from gpustack.scheduler.request import LlamaBoxNeed, PlacementRequest
from gpustack.schemas.placement import LayerLayout, ParallelLayout
from tests.estimate.test_hf_config import qwen25_omni_config
from tests.scheduler.fixtures import GiB, a100_box, ascend_box, estimate, llama_70b, worker
from tests.scheduler.test_place import llama_config

L40S = ("cuda", "NVIDIA L40S", 48 * GiB)
A4000 = ("cuda", "NVIDIA RTX A4000", 16 * GiB)
RTX4090 = ("cuda", "NVIDIA GeForce RTX 4090", 24 * GiB)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return llama_70b(tmp_path_factory.mktemp("models"))


def gguf(path: Path, *parameters: str, **kwargs) -> PlacementRequest:
    return PlacementRequest("m", "llama-box", LlamaBoxNeed(estimate(path, *parameters)), **kwargs)


def placed(result: Placement | NoPlacement) -> Placement:
    assert isinstance(result, Placement), result.message()
    return result


def refused(result: Placement | NoPlacement) -> NoPlacement:
    assert isinstance(result, NoPlacement), result.summary
    return result


# ---- llama.cpp's -ngl


def test_ngl_0_is_a_cpu_placement_claiming_ram_only_even_on_a_gpu_worker(model: Path) -> None:
    # Before: a full-offload claim on the GPU, while the engine (given -ngl 0) ran every layer on the CPU.
    box = worker(1, "gpu-a", [L40S] * 2, 256 * GiB)
    result = placed(place(gguf(model, "-ngl", "0"), [box]))
    assert result.mode == "cpu" and result.main.gpu_indexes == [] and result.main.claim.vram == {}
    assert result.main.claim.ram == estimate(model, "-ngl", "0").cpu_only.ram
    assert result.main.claim.cpu_threads == 16 and result.layout == LayerLayout(gpu_layers=0, threads=16)


@pytest.mark.parametrize("spelling", [["-ngl", "50"], ["--n-gpu-layers", "50"], ["--ngl=50"]])
def test_ngl_50_places_exactly_50_layers_and_claims_for_them(model: Path, spelling: list[str]) -> None:
    # Before: one L40S holds all 81 layers, so the claim was for 81 while the engine offloaded 50.
    box = worker(1, "gpu-a", [L40S], 256 * GiB)
    result = placed(place(gguf(model, *spelling), [box]))
    need = estimate(model, *spelling)
    assert result.mode == "partial-offload" and result.layout.gpu_layers == 50
    assert result.main.claim.offload_layers == 50
    assert result.main.claim.vram == {0: need.split([50]).vram[0]}
    assert result.main.claim.ram == need.split([50]).ram + need.growth_bytes
    assert result.main.claim.cpu_threads == 16  # 31 layers compute on the CPU


def test_ngl_50_spans_the_fewest_gpus_that_hold_50_layers(model: Path) -> None:
    box = worker(1, "pc", [A4000] * 4, 256 * GiB)
    result = placed(place(gguf(model, "-ngl", "50"), [box]))
    assert len(result.main.gpu_indexes) == 2 and sum(result.main.layers) == 50
    assert result.layout.gpu_layers == 50 and result.layout.tensor_split == [24, 26]


def test_ngl_below_the_layer_count_with_cpu_offloading_off_is_refused_with_the_reason(model: Path) -> None:
    result = refused(place(gguf(model, "-ngl", "50", cpu_offloading=False), [worker(1, "a", [L40S])]))
    assert result.reasons == [
        "-ngl 50 keeps 31 of the 81 layers on the CPU, but CPU offloading is off for this model: allow it, "
        "or remove -ngl"
    ]


def test_ngl_at_or_above_the_layer_count_is_a_full_offload(model: Path) -> None:
    for given in ("81", "999", "all"):
        result = placed(place(gguf(model, "-ngl", given), [worker(1, "a", [L40S])]))
        assert result.mode == "gpu" and result.main.claim.offload_layers == 81


def test_ngl_that_no_gpu_can_hold_says_so(model: Path) -> None:
    result = refused(place(gguf(model, "-ngl", "70"), [worker(1, "pc", [A4000] * 2, 256 * GiB)]))
    assert (
        "worker pc: its 2 GPU(s) have 30.0 GiB allocatable, not enough for the 70 layers -ngl asks for"
        in (result.reasons)
    )


def test_the_users_tensor_split_is_what_is_claimed_for(model: Path) -> None:
    # Before: the scheduler claimed its own balanced split while the engine, given -ts 3,1, put three
    # quarters of the layers on the first GPU.
    box = worker(1, "gpu-a", [L40S] * 2, 256 * GiB)
    result = placed(place(gguf(model, "-ts", "3,1"), [box]))
    need = estimate(model, "-ts", "3,1")
    assert result.mode == "multi-gpu" and result.main.layers == [61, 20]
    assert list(result.main.claim.vram.values()) == need.split([61, 20]).vram
    too_uneven = refused(place(gguf(model, "-ts", "9,1"), [worker(2, "pc", [A4000] * 4, 256 * GiB)]))
    assert too_uneven.reasons[-1] == (
        "worker pc: --tensor-split 9,1 puts 39.7 GiB + 4.9 GiB on its roomiest GPUs, which have 15.0 GiB + "
        "15.0 GiB allocatable"
    )


def test_split_mode_none_keeps_every_layer_on_one_gpu(model: Path) -> None:
    box = worker(1, "pc", [A4000] * 4, 256 * GiB)
    result = placed(place(gguf(model, "-sm", "none"), [box]))
    assert result.mode == "partial-offload" and len(result.main.gpu_indexes) == 1
    assert result.main.claim.offload_layers == 26  # what one 16 GiB GPU holds, not 4 GPUs' worth


# ---- vLLM and MindIE parallel sizes


def vllm(files: ModelFiles, *parameters: str, ray: bool = False) -> PlacementRequest:
    options = parse_vllm_options(list(parameters))
    return PlacementRequest("m", "vllm", vllm_need(estimate_vllm(files, options), options, ray))


def mindie(files: ModelFiles, *parameters: str) -> PlacementRequest:
    options = parse_mindie_options(list(parameters))
    return PlacementRequest("m", "ascend-mindie", mindie_need(estimate_mindie(files, options), options))


def test_vllm_tensor_parallel_size_4_takes_exactly_4_gpus_even_when_one_would_do() -> None:
    # Before: one GPU (the 8B fits one A100), while vLLM started with -tp 4 wanted four.
    result = placed(place(vllm(llama_config(), "-tp", "4"), [a100_box()]))
    assert result.mode == "tensor-parallel" and len(result.main.gpu_indexes) == 4
    assert result.layout == ParallelLayout()  # the user's flag is already on the command line
    assert all(v == int(80 * GiB * 0.9) for v in result.main.claim.vram.values())


def test_vllm_tensor_parallel_size_that_does_not_divide_the_heads_is_refused() -> None:
    result = refused(place(vllm(llama_config(), "--tensor-parallel-size=3"), [a100_box()]))
    assert result.reasons == [
        "--tensor-parallel-size 3 does not suit the model: it must divide its 32 attention heads (and its 8 "
        "KV heads, or be a multiple of them), or vllm refuses to start"
    ]


@pytest.mark.parametrize("parameters", [["-tp", "2", "-pp", "2"], ["-tp", "2", "--data-parallel-size", "2"]])
def test_vllm_pipeline_and_data_parallel_multiply_the_gpus(parameters: list[str]) -> None:
    result = placed(place(vllm(llama_config(), *parameters), [a100_box()]))
    assert len(result.main.gpu_indexes) == 4


def test_vllm_tensor_parallel_8_spans_two_4_gpu_workers_with_ray_or_says_why_not() -> None:
    cluster = [worker(1, "a", [L40S] * 4), worker(2, "b", [L40S] * 4)]
    result = placed(place(vllm(llama_config(), "-tp", "8", ray=True), cluster))
    assert (
        result.mode == "multi-worker"
        and len(result.main.gpu_indexes) + len(result.subordinates[0].gpu_indexes) == 8
    )
    without = refused(place(vllm(llama_config(), "-tp", "8"), cluster))
    assert without.reasons == [
        "across workers: start the server with --enable-ray to use several workers",
        "worker a: 4 GPU(s), --tensor-parallel-size 8 needs 8 on one worker",
        "worker b: 4 GPU(s), --tensor-parallel-size 8 needs 8 on one worker",
    ]


def test_mindie_world_size_16_takes_8_npus_on_each_of_two_nodes() -> None:
    cluster = [
        ascend_box(1, "npu-1"),
        ascend_box(2, "npu-2"),
        worker(3, "npu-3", [("npu", "Ascend 910B3", 64 * GiB)] * 4),
    ]
    result = placed(place(mindie(llama_config(), "-tp", "8", "-pp", "2"), cluster))
    assert result.mode == "multi-worker" and result.layout == ParallelLayout(workers=2, devices_per_worker=8)
    assert [len(a.gpu_indexes) for a in (result.main, *result.subordinates)] == [8, 8]


def test_mindie_across_nodes_uses_the_same_npu_count_on_each() -> None:
    # 12 NPUs with room (8 + 4) make no equal split of 16: MindIE needs 8 + 8.
    cluster = [ascend_box(1, "npu-1"), worker(2, "npu-2", [("npu", "Ascend 910B3", 64 * GiB)] * 4)]
    result = refused(place(mindie(llama_config(), "-tp", "16"), cluster))
    assert (
        "across workers: not 16 GPUs that each qualify at tensor parallel 16, the same number on each worker "
        "(--tensor-parallel-size 16)" in result.reasons
    )


def test_qwen25_omni_tensor_parallel_size_divides_its_28_heads() -> None:
    # Before: the heads were not found (they are in thinker_config.text_config), so any size passed.
    files = ModelFiles(config=qwen25_omni_config(), tensors={}, total_bytes=0, source="test")
    result = refused(place(vllm(files, "-tp", "8"), [a100_box()]))
    assert result.reasons[0].startswith(
        "--tensor-parallel-size 8 does not suit the model: it must divide its 28 attention heads"
    )
    assert len(placed(place(vllm(files, "-tp", "4"), [a100_box()])).main.gpu_indexes) == 4
