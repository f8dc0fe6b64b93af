"""The placement pipeline: filter workers, fit the backend's requirement, score, or explain why not.

Pure: plain snapshots in, a Placement or a NoPlacement with every reason out. The caller adds the chosen
claims to its snapshots before placing the next instance, so two placements never claim the same memory.
"""

from __future__ import annotations

from gpustack.scheduler.candidates import Candidate, NoPlacement, Placement, Rejections, score_key
from gpustack.scheduler.cluster import WorkerSnapshot
from gpustack.scheduler.filters import eligible_workers
from gpustack.scheduler.fit import llama_box, single_device, tensor_parallel
from gpustack.scheduler.request import LlamaBoxNeed, PlacementRequest, SingleDeviceNeed, TensorParallelNeed
from gpustack.schemas.models import PlacementStrategy

__all__ = ["NoPlacement", "Placement", "PlacementRequest", "place"]


def _score(candidate: Candidate, strategy: PlacementStrategy) -> tuple[int, ...]:
    load = sum(assignment.worker.instances for assignment in candidate.assignments())
    return score_key(strategy, load, candidate.tightness, candidate.gpu_layers)


def _fits(request: PlacementRequest, eligible: list, rejections: Rejections) -> list[Candidate]:
    need = request.need
    if isinstance(need, LlamaBoxNeed):
        return llama_box.candidates(request, eligible, rejections)
    if isinstance(need, TensorParallelNeed):
        return tensor_parallel.candidates(request, eligible, rejections)
    if isinstance(need, SingleDeviceNeed):
        return single_device.candidates(request, eligible, rejections)
    raise TypeError(f"unknown requirement {type(need).__name__}")


def place(request: PlacementRequest, workers: list[WorkerSnapshot]) -> Placement | NoPlacement:
    # A first pass records no reasons (most placements succeed, and reasons cost most of the time);
    # only when nothing fits is the search run again, this time noting every refusal.
    found = _search(request, workers, Rejections(recording=False))
    if not found:
        rejections = Rejections()
        found = _search(request, workers, rejections)
    if not found:
        reasons = rejections.lines()
        if not workers:
            reasons.append("no workers have registered; start one with `gpustack start --server-url ...`")
        elif not reasons:
            reasons.append("no worker passed the filters")
        return NoPlacement(reasons, [*rejections.hints, *hints(request, workers)])
    best = min(found, key=lambda c: _score(c, request.placement_strategy))
    return Placement(
        main=best.main,
        subordinates=best.subordinates,
        mode=best.mode,
        layout=best.layout,
        summary=best.summary(),
    )


def _search(
    request: PlacementRequest, workers: list[WorkerSnapshot], rejections: Rejections
) -> list[Candidate]:
    eligible = eligible_workers(request, workers, rejections)
    return _fits(request, eligible, rejections) if eligible else []


def hints(request: PlacementRequest, workers: list[WorkerSnapshot]) -> list[str]:
    """Options the user could change that are known to lower what the model needs or widen the search."""
    found = []
    need = request.need
    if isinstance(need, LlamaBoxNeed):
        found.append(
            "a smaller --ctx-size (or --parallel) in the backend parameters shrinks the KV cache "
            f"(now ctx {need.estimate.ctx_size}, parallel {need.estimate.parallel})"
        )
        if not request.cpu_offloading:
            found.append("allowing CPU offloading lets part of the layers, or all, run from RAM")
        if not request.distributed_inference_across_workers and len(workers) > 1:
            found.append(
                "allowing distributed inference across workers lets GPUs of several workers share it"
            )
    elif isinstance(need, TensorParallelNeed):
        found.append(
            "a lower --gpu-memory-utilization (or --npu-memory-fraction) lets GPUs that other models partly "
            "use qualify, if what the model needs still fits"
        )
        found.append("a smaller --max-model-len (--max-seq-len) shrinks the KV cache it must hold")
        if not need.multi_worker and need.multi_worker_off_hint and len(workers) > 1:
            found.append(need.multi_worker_off_hint)
    if request.worker_selector:
        found.append(f"the worker selector {request.worker_selector} limits the workers considered")
    if request.gpu_ids:
        found.append(f"the GPU selector limits it to {', '.join(request.gpu_ids)}")
    return found
