"""A GPU selector means exactly these GPUs: with CPU offloading they take as many layers as fit, and a
GPU that does not exist (or may not be used) is a reason, never a smaller placement."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gpustack.scheduler.candidates import NoPlacement, Placement
from gpustack.scheduler.place import place
from gpustack.scheduler.request import LlamaBoxNeed, PlacementRequest
from gpustack.schemas.placement import LayerLayout
from tests.scheduler.fixtures import (
    GiB,
    ascend_box,
    estimate,
    llama_8b,
    llama_70b,
    rtx4090_box,
    worker,
)
from tests.scheduler.test_place import llama_config, vllm

A4000 = ("cuda", "NVIDIA RTX A4000", 16 * GiB)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("models")
    return {"70b": llama_70b(directory), "8b": llama_8b(directory)}


def gguf(path: Path, *parameters: str, **kwargs) -> PlacementRequest:
    return PlacementRequest("m", "llama-box", LlamaBoxNeed(estimate(path, *parameters)), **kwargs)


def placed(result: Placement | NoPlacement) -> Placement:
    assert isinstance(result, Placement), result.message()
    return result


def refused(result: Placement | NoPlacement) -> NoPlacement:
    assert isinstance(result, NoPlacement), result.summary
    return result


def test_one_selected_gpu_takes_the_layers_that_fit_and_the_rest_go_to_ram(models: dict[str, Path]) -> None:
    box = worker(1, "pc", [A4000] * 2, 128 * GiB)
    result = placed(place(gguf(models["70b"], gpu_ids=("pc:cuda:1",)), [box]))
    assert result.mode == "partial-offload" and result.main.gpu_indexes == [1]
    assert result.layout.gpu_layers == 26 and result.main.claim.offload_layers == 26
    table = estimate(models["70b"]).table()
    assert result.main.claim.vram == {1: table[26].vram} and table[27].vram > 15 * GiB


def test_selected_gpus_of_one_worker_share_a_partial_offload(models: dict[str, Path]) -> None:
    box = worker(1, "pc", [A4000] * 4, 128 * GiB)
    result = placed(place(gguf(models["70b"], gpu_ids=("pc:cuda:0", "pc:cuda:2")), [box]))
    assert result.mode == "partial-offload" and sorted(result.main.gpu_indexes) == [0, 2]
    assert result.layout == LayerLayout(gpu_layers=53, tensor_split=[27, 26], threads=16)


def test_selected_gpus_without_cpu_offloading_must_hold_the_whole_model(models: dict[str, Path]) -> None:
    box = worker(1, "pc", [A4000] * 2, 128 * GiB)
    request = gguf(models["70b"], gpu_ids=("pc:cuda:0", "pc:cuda:1"), cpu_offloading=False)
    result = refused(place(request, [box]))
    assert result.reasons == [
        "the selected GPUs together cannot hold the model: 30.0 GiB allocatable, every layer needs 44.1 GiB "
        "plus a compute buffer on each GPU; allowing CPU offloading puts the rest in RAM"
    ]


def test_selected_gpus_that_hold_the_model_take_every_layer(models: dict[str, Path]) -> None:
    cluster = [rtx4090_box(1, "gpu-a"), worker(2, "gpu-b", [A4000] * 2)]
    result = placed(place(gguf(models["70b"], gpu_ids=("gpu-a:cuda:0", "gpu-a:cuda:1")), cluster))
    assert result.mode == "multi-gpu" and sorted(result.main.gpu_indexes) == [0, 1]
    assert sum(result.main.layers) == 81


def test_a_selector_naming_a_gpu_the_worker_lacks_is_refused_never_shrunk(models: dict[str, Path]) -> None:
    # Before: placed on gpu-a:cuda:0 alone, as if the selector had named only that one.
    cluster = [rtx4090_box(1, "gpu-a")]
    result = refused(place(gguf(models["8b"], gpu_ids=("gpu-a:cuda:0", "gpu-a:cuda:7")), cluster))
    assert result.reasons == [
        "selected GPU gpu-a:cuda:7: worker gpu-a has no such GPU (it has gpu-a:cuda:0, gpu-a:cuda:1)"
    ]


def test_a_selector_naming_an_unknown_worker_or_a_worker_that_is_down_is_refused(
    models: dict[str, Path],
) -> None:
    down = rtx4090_box(2, "gpu-b")
    down.state, down.state_message = "not_ready", "no heartbeat for 16s"
    cluster = [rtx4090_box(1, "gpu-a"), down]
    unknown = refused(place(gguf(models["8b"], gpu_ids=("gpu-a:cuda:0", "gpu-z:cuda:0")), cluster))
    assert unknown.reasons == [
        "selected GPU gpu-z:cuda:0: no worker has it (ids look like <worker>:<type>:<index>)"
    ]
    offline = refused(place(gguf(models["8b"], gpu_ids=("gpu-a:cuda:0", "gpu-b:cuda:1")), cluster))
    assert offline.reasons == ["selected GPU gpu-b:cuda:1: worker gpu-b: not_ready (no heartbeat for 16s)"]


def test_a_selected_gpu_of_a_kind_the_backend_cannot_use_is_refused() -> None:
    cluster = [ascend_box(1, "npu-1"), rtx4090_box(2, "gpu-a")]
    result = refused(place(replace(vllm(llama_config()), gpu_ids=("npu-1:npu:0",)), cluster))
    assert "worker npu-1: vllm needs cuda/dcu/rocm GPUs, worker has npu" in result.reasons


def test_ngl_zero_with_a_gpu_selector_is_a_contradiction_explained(models: dict[str, Path]) -> None:
    result = refused(place(gguf(models["8b"], "-ngl", "0", gpu_ids=("gpu-a:cuda:0",)), [rtx4090_box()]))
    assert result.reasons == [
        "-ngl 0 runs every layer on the CPU, but a GPU selector names GPUs: remove one of the two"
    ]
