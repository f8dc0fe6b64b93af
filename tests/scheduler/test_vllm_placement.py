"""Where vLLM goes besides one worker's GPUs: its CPU build on a worker without GPUs (one worker only,
never across workers), and the Ray head port of a placement across workers."""

from __future__ import annotations

import dataclasses

from gpustack.estimate.vllm import estimate_vllm, parse_vllm_options
from gpustack.scheduler.candidates import NoPlacement, Placement
from gpustack.scheduler.fit.engine_cpu import ACROSS_WORKERS_NEEDS_GPUS
from gpustack.scheduler.needs import vllm_need
from gpustack.scheduler.place import place
from gpustack.scheduler.request import CpuNeed, PlacementRequest
from gpustack.schemas.placement import ParallelLayout
from tests.scheduler.fixtures import GiB, cpu_box, rtx4090_box, worker
from tests.scheduler.test_place import llama_config

SMALL = ("cuda", "Virtual 24 GiB", 24 * GiB)


def request(*parameters: str, ray: bool = False, cpu_ram: int = 20 * GiB) -> PlacementRequest:
    options = parse_vllm_options(list(parameters))
    estimate = estimate_vllm(llama_config(), options)  # an 8B-class BF16 model: about 17 GiB on a GPU
    need = vllm_need(estimate, options, ray, CpuNeed(ram=cpu_ram, kv_cache_gib=2))
    return PlacementRequest("m", "vllm", dataclasses.replace(need, max_model_len=8192))


def placed(result: Placement | NoPlacement) -> Placement:
    assert isinstance(result, Placement), result.message()
    return result


def refused(result: Placement | NoPlacement) -> NoPlacement:
    assert isinstance(result, NoPlacement), result.summary
    return result


def test_a_worker_without_gpus_runs_vllm_on_its_cpu_claiming_the_ram_it_takes() -> None:
    result = placed(place(request(), [cpu_box(ram=64 * GiB)]))
    assert result.mode == "cpu" and result.main.gpu_indexes == [] and result.main.claim.vram == {}
    assert result.main.claim.ram == 20 * GiB
    assert result.layout == ParallelLayout(max_model_len=8192, cpu_kv_cache_gib=2)


def test_gpus_come_first_and_a_gpu_worker_never_runs_vllms_cpu_build() -> None:
    gpus = rtx4090_box(1, "gpu-a")
    result = placed(place(request(), [cpu_box(ram=64 * GiB), gpus]))
    assert result.main.worker.name == "gpu-a" and result.mode == "gpu"
    full = rtx4090_box(1, "gpu-a")
    full.vram_free = {0: 0, 1: 0}
    full.max_vram_free = 0
    elsewhere = placed(place(request(), [full, cpu_box(ram=64 * GiB)]))
    assert elsewhere.main.worker.name == "cpu-1" and elsewhere.mode == "cpu"
    nowhere = refused(place(request(), [full]))
    assert not any("RAM allocatable" in reason for reason in nowhere.reasons)


def test_cpu_only_workers_never_get_vllm_across_workers_and_are_told_why() -> None:
    # Two CPU workers of 16 GiB cannot hold 20 GiB alone, and together they could only through Ray,
    # which vLLM's CPU build refuses: the reason says multi-worker vLLM needs GPUs.
    for ray in (False, True):
        result = refused(
            place(request(ray=ray), [cpu_box(5, "cpu-1", 16 * GiB), cpu_box(6, "cpu-2", 16 * GiB)])
        )
        assert "worker cpu-1: 14.0 GiB RAM allocatable, needs 20.0 GiB to run on the CPU" in result.reasons
        expected = ACROSS_WORKERS_NEEDS_GPUS.format(backend="vllm", need="20.0 GiB")
        assert expected in result.reasons
        assert "runs across several workers only on GPUs" in result.message()


def test_parallel_sizes_that_need_several_ranks_are_not_placed_on_the_cpu() -> None:
    result = refused(place(request("--tensor-parallel-size", "2"), [cpu_box(ram=64 * GiB)]))
    assert any("asks for 2 ranks" in reason and "remove the flag" in reason for reason in result.reasons)


def test_a_placement_across_workers_through_ray_gets_a_head_port_its_main_worker_offers() -> None:
    a, b = worker(1, "a", [SMALL]), worker(2, "b", [SMALL])
    a.ray_head_ports, b.ray_head_ports = (40096,), (41000, 41026)
    first = placed(place(request("--tensor-parallel-size", "2", ray=True), [a, b]))
    assert first.mode == "multi-worker" and isinstance(first.layout, ParallelLayout)
    assert first.layout.workers == 2 and first.layout.ray_head_port in (40096, 41000)
    head = first.main.worker
    assert first.layout.ray_head_port == head.ray_head_ports[0]
    first.apply()
    assert head.ray_heads == {first.layout.ray_head_port}
    # The next placement with the same main worker gets another of its ports, or another main worker.
    a.vram_free, b.vram_free = {0: 23 * GiB}, {0: 23 * GiB}  # pretend the GPUs are free again
    second = placed(place(request("--tensor-parallel-size", "2", ray=True), [a, b]))
    assert isinstance(second.layout, ParallelLayout)
    assert (second.main.worker.name, second.layout.ray_head_port) != (head.name, first.layout.ray_head_port)


def test_workers_that_offer_no_ray_port_cannot_head_a_cluster() -> None:
    a, b = worker(1, "a", [SMALL]), worker(2, "b", [SMALL])
    a.ray_head_ports = b.ray_head_ports = ()  # workers older than Ray across workers report none
    result = refused(place(request("--tensor-parallel-size", "2", ray=True), [a, b]))
    assert any("has a free Ray port for the head" in reason for reason in result.reasons)
