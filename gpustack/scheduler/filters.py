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
        if not worker.gpu_types & need.gpu_types and need.cpu is None:
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
    return gpus


def eligible_workers(
    request: PlacementRequest, workers: list[WorkerSnapshot], rejections: Rejections
) -> list[Eligible]:
    if request.gpu_ids:
        return _selected_workers(request, workers, rejections)
    result = []
    need = request.need
    plain = not request.worker_selector
    kinds = need.gpu_types if isinstance(need, TensorParallelNeed | SingleDeviceNeed) else None
    linux_only = isinstance(need, TensorParallelNeed) and need.linux_only
    # vLLM's CPU build runs where no GPU of vLLM's kinds is: workers without them stay candidates.
    gpuless_ok = isinstance(need, TensorParallelNeed) and need.cpu is not None
    for worker in workers:
        # The common cases first, without the checks' calls; anything unusual goes the long way.
        if plain and worker.state == "ready":
            if kinds is None:
                result.append(Eligible(worker, worker.gpus))
                continue
            if not rejections.recording and not (worker.gpu_types & kinds) and not gpuless_ok:
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
        result.append(Eligible(worker, _usable_gpus(worker, request)))
    return result


def _selected_workers(
    request: PlacementRequest, workers: list[WorkerSnapshot], rejections: Rejections
) -> list[Eligible]:
    """A GPU selector means exactly these GPUs: each must exist on a worker that may take the instance
    and be of a kind the backend runs on, or nothing is placed (never a smaller placement)."""
    by_name = {worker.name: worker for worker in workers}
    chosen: dict[int, tuple[WorkerSnapshot, list[GPUSnapshot]]] = {}
    missing = False
    need = request.need
    kinds = need.gpu_types if isinstance(need, TensorParallelNeed | SingleDeviceNeed) else None
    for gpu_id in dict.fromkeys(request.gpu_ids):
        worker, gpu = _find_gpu(gpu_id, workers, by_name)
        if worker is None or gpu is None:
            missing = True
            _unknown_gpu(gpu_id, worker, rejections)
            continue
        if worker.id not in chosen:
            problem = _state(worker) or _labels(worker, request.worker_selector)
            if problem is not None:
                missing = True
                rejections.add(
                    "selected GPU {gpu}: worker {worker}: {check}",
                    gpu=gpu_id,
                    worker=worker.name,
                    check=problem,
                )
                continue
            if not _backend(worker, request, rejections):
                missing = True
                continue
            chosen[worker.id] = (worker, [])
        if kinds is not None and gpu.type not in kinds:
            missing = True
            rejections.add(
                "selected GPU {gpu} is a {type} device; {backend} runs on {kinds} GPUs",
                gpu=gpu_id,
                type=gpu.type,
                backend=request.backend,
                kinds=_Kinds(kinds, "/"),
            )
            continue
        chosen[worker.id][1].append(gpu)
    if missing:
        return []
    return [Eligible(worker, gpus) for worker, gpus in chosen.values() if gpus]


def _find_gpu(
    gpu_id: str, workers: list[WorkerSnapshot], by_name: dict[str, WorkerSnapshot]
) -> tuple[WorkerSnapshot | None, GPUSnapshot | None]:
    for worker in workers:
        for gpu in worker.gpus:
            if gpu.id == gpu_id:
                return worker, gpu
    name = gpu_id.split(":", 1)[0]  # <worker name>:<type>:<index>; a worker name holds no colon
    return by_name.get(name), None


def _unknown_gpu(gpu_id: str, worker: WorkerSnapshot | None, rejections: Rejections) -> None:
    if worker is None:
        rejections.add(
            "selected GPU {gpu}: no worker has it (ids look like <worker>:<type>:<index>)", gpu=gpu_id
        )
    else:
        rejections.add(
            "selected GPU {gpu}: worker {worker} has no such GPU (it has {have})",
            gpu=gpu_id,
            worker=worker.name,
            have=", ".join(gpu.id for gpu in worker.gpus) or "no GPUs",
        )
