"""Filters: which workers (and which of their GPUs) may take an instance at all, each with its reason."""

from __future__ import annotations

from typing import NamedTuple

from gpustack.scheduler.candidates import Rejections
from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.scheduler.request import PlacementRequest, SingleDeviceNeed, TensorParallelNeed


class Eligible(NamedTuple):
    """A worker that passed the filters, with the GPUs this request may use on it. (A tuple: one is made
    per worker and placement, and tuples are the cheapest to make.)"""

    worker: WorkerSnapshot
    gpus: list[GPUSnapshot]


def _state(worker: WorkerSnapshot) -> str | None:
    if worker.state == "ready":
        return None
    detail = f" ({worker.state_message.splitlines()[0]})" if worker.state_message else ""
    return f"{worker.state}{detail}"


def _labels(worker: WorkerSnapshot, selector: dict[str, str]) -> str | None:
    for key, value in selector.items():
        have = worker.labels.get(key)
        if have != value:
            return f"label {key}={value} required" + (f", worker has {key}={have}" if have else "")
    return None


def _backend(worker: WorkerSnapshot, request: PlacementRequest, rejections: Rejections) -> bool:
    """Whether the backend can run on this worker at all; records why not."""
    need = request.need
    if isinstance(need, TensorParallelNeed):
        if need.linux_only and worker.os and worker.os != "linux":
            rejections.add(
                "worker {worker}: {backend} runs only on Linux workers, this one runs {os}",
                worker=worker.name,
                backend=request.backend,
                os=worker.os,
            )
            return False
        if not worker.gpu_types & need.gpu_types:
            rejections.add(
                "worker {worker}: {backend} needs {kinds} GPUs, worker has {have}",
                worker=worker.name,
                backend=request.backend,
                kinds=_Kinds(need.gpu_types, "/"),
                have=_Kinds(worker.gpu_types, ", ", "none"),
            )
            return False
    return True


class _Kinds:
    """GPU types, sorted and joined only if a message is written."""

    def __init__(self, kinds: frozenset[str], separator: str, empty: str = "") -> None:
        self.kinds, self.separator, self.empty = kinds, separator, empty

    def __format__(self, spec: str) -> str:
        return self.separator.join(sorted(self.kinds)) or self.empty


def _usable_gpus(worker: WorkerSnapshot, request: PlacementRequest) -> list[GPUSnapshot]:
    gpus = worker.gpus
    need = request.need
    if isinstance(need, TensorParallelNeed | SingleDeviceNeed) and not worker.gpu_types <= need.gpu_types:
        gpus = [gpu for gpu in gpus if gpu.type in need.gpu_types]
    if request.gpu_ids:
        gpus = [gpu for gpu in gpus if gpu.id in request.gpu_ids]
    return gpus


def eligible_workers(
    request: PlacementRequest, workers: list[WorkerSnapshot], rejections: Rejections
) -> list[Eligible]:
    result = []
    need = request.need
    plain = not request.worker_selector and not request.gpu_ids
    kinds = need.gpu_types if isinstance(need, TensorParallelNeed | SingleDeviceNeed) else None
    linux_only = isinstance(need, TensorParallelNeed) and need.linux_only
    for worker in workers:
        # The common cases first, without the checks' calls; anything unusual goes the long way.
        if plain and worker.state == "ready":
            if kinds is None:
                result.append(Eligible(worker, worker.gpus))
                continue
            if not rejections.recording and not (worker.gpu_types & kinds):
                continue  # no GPU of the kinds the backend runs on
            if (
                worker.gpu_types
                and worker.gpu_types <= kinds
                and (not linux_only or worker.os in ("", "linux"))
            ):
                result.append(Eligible(worker, worker.gpus))
                continue
        problem = _state(worker) or _labels(worker, request.worker_selector)
        if problem is not None:
            rejections.add("worker {worker}: {check}", worker=worker.name, check=problem)
            continue
        if not _backend(worker, request, rejections):
            continue
        gpus = _usable_gpus(worker, request)
        if request.gpu_ids and not gpus:
            continue  # the selected GPUs are elsewhere; checked as a whole by the selector rule
        result.append(Eligible(worker, gpus))
    if request.gpu_ids:
        _check_selected_gpus(request, workers, result, rejections)
    return result


def _check_selected_gpus(
    request: PlacementRequest, workers: list[WorkerSnapshot], eligible: list[Eligible], rejections: Rejections
) -> None:
    known = {gpu.id: worker for worker in workers for gpu in worker.gpus}
    usable = {gpu.id for entry in eligible for gpu in entry.gpus}
    for gpu_id in request.gpu_ids:
        if gpu_id not in known:
            rejections.add(
                "selected GPU {gpu}: no worker has it (ids look like <worker>:<type>:<index>)", gpu=gpu_id
            )
        elif gpu_id not in usable:
            worker = known[gpu_id]
            rejections.add(
                "selected GPU {gpu}: worker {worker} cannot take this instance",
                gpu=gpu_id,
                worker=worker.name,
            )
