"""Where a one-device engine can run: one GPU of the kinds it takes (vox-box: NVIDIA), else the CPU."""

from __future__ import annotations

from gpustack.scheduler.candidates import CPU_SHORT, GPU_SHORT, Assignment, Best, Bytes, Candidate, Rejections
from gpustack.scheduler.filters import Eligible
from gpustack.scheduler.request import PlacementRequest, SingleDeviceNeed
from gpustack.schemas.models import ResourceClaim
from gpustack.schemas.placement import DeviceLayout, PlacementMode


def candidates(
    request: PlacementRequest, eligible: list[Eligible], rejections: Rejections
) -> list[Candidate]:
    need = request.need
    assert isinstance(need, SingleDeviceNeed)
    on_gpu = Best(request.placement_strategy)
    for entry in eligible:
        worker = entry.worker
        for gpu in entry.gpus:
            free = worker.vram_free.get(gpu.index, 0)
            if free < need.vram or worker.ram_free < need.ram_on_gpu:
                if on_gpu.worker is None:  # reasons matter only if nothing fits
                    rejections.add(
                        GPU_SHORT, worker=worker.name, gpu=gpu, free=Bytes(free), need=Bytes(need.vram)
                    )
                continue
            on_gpu.offer(worker, gpu.index, free - need.vram)
    if on_gpu.worker is not None:
        claim = ResourceClaim(ram=need.ram_on_gpu, vram={on_gpu.index: need.vram})
        return [
            Candidate(
                PlacementMode.GPU,
                Assignment(on_gpu.worker, [on_gpu.index], claim),
                layout=DeviceLayout(),
                tightness=on_gpu.tightness,
            )
        ]
    if request.gpu_ids or not need.cpu_fallback:
        return []
    on_cpu = Best(request.placement_strategy)
    for entry in eligible:
        worker = entry.worker
        if worker.ram_free < need.ram_on_cpu:
            rejections.add(
                CPU_SHORT, worker=worker.name, free=Bytes(worker.ram_free), need=Bytes(need.ram_on_cpu)
            )
            continue
        on_cpu.offer(worker, -1, worker.ram_free - need.ram_on_cpu)
    if on_cpu.worker is None:
        return []
    claim = ResourceClaim(ram=need.ram_on_cpu)
    assignment = Assignment(on_cpu.worker, [], claim)
    return [Candidate(PlacementMode.CPU, assignment, layout=DeviceLayout(), tightness=on_cpu.tightness)]
