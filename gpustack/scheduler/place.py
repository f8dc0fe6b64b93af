"""First placement policy: one GPU holding the whole model, else the CPU, with a reason for every refusal.

The full pipeline (partial offload, multi-GPU, RPC across workers, per-backend fits) replaces this in
its own issue; the shape stays: filters and fits return verdicts with reasons, scoring picks one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.schemas.models import PlacementStrategy, ResourceClaim
from gpustack.utils.units import format_bytes


@dataclass(frozen=True)
class MemoryRequirement:
    """What one instance needs, from the estimator: all on one GPU, or all in RAM."""

    cpu_only_ram: int
    gpu_ram: int
    gpu_vram: int
    total_layers: int
    description: str = ""


@dataclass(frozen=True)
class PlacementRequest:
    model_name: str
    requirement: MemoryRequirement
    placement_strategy: PlacementStrategy = PlacementStrategy.SPREAD
    worker_selector: dict[str, str] = field(default_factory=dict)
    gpu_ids: tuple[str, ...] = ()
    cpu_offloading: bool = True


@dataclass(frozen=True)
class Placement:
    worker_id: int
    worker_name: str
    gpu_indexes: list[int]
    claim: ResourceClaim
    summary: str


@dataclass(frozen=True)
class NoPlacement:
    reasons: list[str]
    hint: str = ""

    def message(self) -> str:
        lines = ["No worker can run this instance:"] + [f"- {reason}" for reason in self.reasons]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


@dataclass(frozen=True)
class _Candidate:
    worker: WorkerSnapshot
    gpu: GPUSnapshot | None
    claim: ResourceClaim
    free_after: int  # bytes left on the device it lands on; scoring input


def _label_mismatch(worker: WorkerSnapshot, selector: dict[str, str]) -> str | None:
    for key, value in selector.items():
        if worker.labels.get(key) != value:
            have = worker.labels.get(key)
            return (
                f"label {key}={value} required, worker has {key}={have}"
                if have
                else f"label {key}={value} required"
            )
    return None


def _gpu_label(gpu: GPUSnapshot) -> str:
    return f"GPU {gpu.index} ({gpu.name})"


def _fit_worker(worker: WorkerSnapshot, request: PlacementRequest, reasons: list[str]) -> list[_Candidate]:
    need = request.requirement
    candidates: list[_Candidate] = []
    ram_free = worker.allocatable_ram()
    gpus = worker.gpus
    if request.gpu_ids:
        gpus = [gpu for gpu in gpus if gpu.id in request.gpu_ids]
        if not gpus:
            reasons.append(f"worker {worker.name}: none of the selected GPUs ({', '.join(request.gpu_ids)})")
            return []
    for gpu in gpus:
        vram_free = worker.allocatable_vram(gpu)
        if vram_free < need.gpu_vram:
            reasons.append(
                f"worker {worker.name}, {_gpu_label(gpu)}: {format_bytes(max(vram_free, 0))} allocatable, "
                f"needs {format_bytes(need.gpu_vram)}"
            )
            continue
        if ram_free < need.gpu_ram:
            reasons.append(
                f"worker {worker.name}: {format_bytes(max(ram_free, 0))} RAM allocatable, "
                f"needs {format_bytes(need.gpu_ram)} beside {_gpu_label(gpu)}"
            )
            continue
        claim = ResourceClaim(
            ram=need.gpu_ram,
            vram={gpu.index: need.gpu_vram},
            offload_layers=need.total_layers,
            total_layers=need.total_layers,
        )
        candidates.append(_Candidate(worker, gpu, claim, vram_free - need.gpu_vram))
    if candidates or request.gpu_ids:
        return candidates
    if worker.gpus and not request.cpu_offloading:
        reasons.append(f"worker {worker.name}: CPU offloading is off, so the model must fit on a GPU")
        return []
    if ram_free < need.cpu_only_ram:
        reasons.append(
            f"worker {worker.name}: {format_bytes(max(ram_free, 0))} RAM allocatable, "
            f"needs {format_bytes(need.cpu_only_ram)} to run on the CPU"
        )
        return []
    claim = ResourceClaim(ram=need.cpu_only_ram, offload_layers=0, total_layers=need.total_layers)
    return [_Candidate(worker, None, claim, ram_free - need.cpu_only_ram)]


def _score(candidate: _Candidate, strategy: PlacementStrategy, instances_on_worker: int) -> tuple:
    on_gpu = candidate.gpu is not None
    if strategy == PlacementStrategy.BINPACK:
        # GPUs before CPU, then the tightest fit.
        return (not on_gpu, candidate.free_after)
    # Spread: GPUs before CPU, then the least loaded worker, then the roomiest device.
    return (not on_gpu, instances_on_worker, -candidate.free_after)


def place(request: PlacementRequest, workers: list[WorkerSnapshot]) -> Placement | NoPlacement:
    reasons: list[str] = []
    candidates: list[_Candidate] = []
    for worker in workers:
        if worker.state != "ready":
            detail = f" ({worker.state_message.splitlines()[0]})" if worker.state_message else ""
            reasons.append(f"worker {worker.name}: {worker.state}{detail}")
            continue
        mismatch = _label_mismatch(worker, request.worker_selector)
        if mismatch:
            reasons.append(f"worker {worker.name}: {mismatch}")
            continue
        candidates.extend(_fit_worker(worker, request, reasons))
    if not candidates:
        if not workers:
            reasons.append("no workers have registered; start one with `gpustack start --server-url ...`")
        return NoPlacement(reasons, _hint(request))
    best = min(candidates, key=lambda c: _score(c, request.placement_strategy, len(c.worker.claims)))
    where = _gpu_label(best.gpu) if best.gpu else "CPU"
    size = sum(best.claim.vram.values()) if best.gpu else best.claim.ram
    return Placement(
        worker_id=best.worker.id,
        worker_name=best.worker.name,
        gpu_indexes=[best.gpu.index] if best.gpu else [],
        claim=best.claim,
        summary=f"placed on worker {best.worker.name}, {where}, claiming {format_bytes(size)}",
    )


def _hint(request: PlacementRequest) -> str:
    hints = ["a smaller --ctx-size or --parallel in the backend parameters lowers the KV cache"]
    if not request.cpu_offloading:
        hints.append("allowing CPU offloading lets workers without enough VRAM run it on the CPU")
    return "Hint: " + "; ".join(hints) + "."
