"""Where an instance could go (candidates), where it goes (placement), and why it cannot (rejections)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.schemas.models import PlacementStrategy, ResourceClaim
from gpustack.schemas.placement import LayerLayout, Layout, ParallelLayout, PlacementMode
from gpustack.utils.units import format_bytes


@dataclass(frozen=True)
class Assignment:
    """One worker's part of a placement: its GPUs (in the engine's device order), what it claims there,
    and for llama-box how many layers each of those GPUs holds."""

    worker: WorkerSnapshot
    gpu_indexes: list[int]
    claim: ResourceClaim
    layers: list[int] = field(default_factory=list)  # per GPU, parallel to gpu_indexes; empty if not layered


def score_key(
    strategy: PlacementStrategy, load: int, tightness: int, gpu_layers: int = 0
) -> tuple[int, int, int]:
    """Smaller is better. binpack: the most layers on GPUs, then the fullest device that fits, then the
    busiest worker; spread: the least loaded workers, then the most layers on GPUs, then the roomiest
    device. (Layers differ only between partial offloads: elsewhere every layer is on a GPU.)"""
    if strategy == PlacementStrategy.BINPACK:
        return (-gpu_layers, tightness, -load)
    return (load, -gpu_layers, -tightness)


class Best:
    """The best of many single-device options by score, kept as plain values: only the winner becomes a
    Candidate (building one per fitting GPU of a large cluster is what would make scheduling slow)."""

    def __init__(self, strategy: PlacementStrategy) -> None:
        self.strategy = strategy
        self.key: tuple[int, int] | None = None
        self.worker: WorkerSnapshot | None = None
        self.index: int = -1
        self.tightness = 0

    def offer(self, worker: WorkerSnapshot, index: int, tightness: int) -> None:
        # score_key, inlined: this runs once per worker and placement.
        if self.strategy == PlacementStrategy.BINPACK:
            key = (tightness, -worker.instances)
        else:
            key = (worker.instances, -tightness)
        if self.key is None or key < self.key:
            self.key, self.worker, self.index, self.tightness = key, worker, index, tightness


@dataclass(frozen=True)
class Candidate:
    mode: PlacementMode
    main: Assignment
    subordinates: list[Assignment] = field(default_factory=list)
    layout: Layout | None = None  # what the placement implies for the engine; None: the backend's defaults
    tightness: int = 0  # bytes left on the devices used after this placement; scoring input
    gpu_layers: int = 0  # llama-box: layers on GPUs (scoring prefers more among partial offloads)
    total_layers: int = 0  # llama-box: the model's offloadable layers; 0 for other backends

    def assignments(self) -> list[Assignment]:
        return [self.main, *self.subordinates]

    def summary(self) -> str:
        """Where it goes and what it claims, per worker and GPU; for llama-box, how many layers go where."""
        head = f"{self.mode.value}: "
        if self.total_layers and 0 < self.gpu_layers < self.total_layers:
            cpu = self.total_layers - self.gpu_layers
            head += f"{self.gpu_layers} of {self.total_layers} layers on GPUs, {cpu} on the CPU; "
        return head + "; ".join(_describe(a, a is self.main) for a in self.assignments())


def _describe(assignment: Assignment, main: bool) -> str:
    worker, claim = assignment.worker, assignment.claim
    parts = []
    for i, index in enumerate(assignment.gpu_indexes):
        gpu = worker.gpu(index)
        name = f"GPU {index}" if gpu is None else f"GPU {index} ({gpu.name})"
        count = assignment.layers[i] if i < len(assignment.layers) else None
        layers = f" {count} layer{'' if count == 1 else 's'}," if count is not None else ""
        parts.append(f"{name}{layers} {format_bytes(claim.vram.get(index, 0))}")
    if main and (claim.ram or not assignment.gpu_indexes):
        ram = f"RAM {format_bytes(claim.ram)}"
        if claim.cpu_threads:
            ram += f", {claim.cpu_threads} CPU threads"
        parts.append(ram)
    return f"worker {worker.name} ({'; '.join(parts)})"


GPU_SHORT = "worker {worker}, GPU {gpu.index} ({gpu.name}): {free} allocatable, needs {need}"
CPU_SHORT = "worker {worker}: {free} RAM allocatable, needs {need} to run on the CPU"


class Bytes(int):
    """A size that formats itself for people ('7.2 GiB'), only when a message is actually written."""

    def __format__(self, spec: str) -> str:
        return format_bytes(max(int(self), 0))


@dataclass(frozen=True)
class _Reason:
    template: str
    values: dict[str, object]

    def lines(self) -> list[str]:
        return [self.template.format(**self.values)]


@dataclass(frozen=True)
class _GpusShort:
    """Every GPU of one worker too small: one entry while deciding, a line per GPU when written."""

    worker: WorkerSnapshot
    gpus: list[GPUSnapshot]
    need: int
    free: tuple[int, ...]  # as it was when refused; later placements in the round change the snapshot

    def lines(self) -> list[str]:
        need = Bytes(self.need)
        return [
            GPU_SHORT.format(worker=self.worker.name, gpu=gpu, free=Bytes(free), need=need)
            for gpu, free in zip(self.gpus, self.free, strict=True)
        ]


class Rejections:
    """Why each worker, GPU or strategy was passed over: templates and their values, formatted only if
    nothing fits (formatting is the slow part, and a successful placement never needs it)."""

    def __init__(self, recording: bool = True) -> None:
        self.recording = recording  # off for the first, hopeful pass; see place()
        self._items: list[_Reason | _GpusShort] = []
        self.hints: dict[str, None] = {}  # what the user could change, for the refusals seen

    def suggest(self, hint: str) -> None:
        if self.recording:
            self.hints.setdefault(hint, None)

    def add(self, template: str, **values: object) -> None:
        if self.recording:
            self._items.append(_Reason(template, values))

    def unified_memory_short(self, worker: WorkerSnapshot, vram: int, ram: int) -> None:
        """A worker whose GPU shares its RAM (Apple silicon, Jetson) cannot hold both claims at once."""
        self.add(
            "worker {worker}: unified memory: {vram} on its GPU and {ram} of RAM together exceed the "
            "{free} allocatable",
            worker=worker.name,
            vram=Bytes(vram),
            ram=Bytes(ram),
            free=Bytes(worker.ram_free),
        )

    def gpus_short(self, worker: WorkerSnapshot, gpus: list[GPUSnapshot], need: int) -> None:
        if not self.recording:
            return
        free = tuple(worker.vram_free.get(gpu.index, 0) for gpu in gpus)
        self._items.append(_GpusShort(worker, gpus, need, free))

    def lines(self) -> list[str]:
        seen: dict[str, None] = {}
        for item in self._items:
            for line in item.lines():
                seen.setdefault(line, None)
        return list(seen)

    def __bool__(self) -> bool:
        return bool(self._items)


@dataclass(frozen=True)
class Placement:
    main: Assignment
    subordinates: list[Assignment]
    mode: PlacementMode
    layout: Layout | None
    summary: str

    def apply(self) -> None:
        """Count this placement in the snapshots, so the next decision sees it."""
        for assignment in (self.main, *self.subordinates):
            assignment.worker.add_claim(assignment.claim)
        if isinstance(self.layout, LayerLayout) and self.layout.rpc:  # offload through llama.cpp RPC servers
            for assignment in self.subordinates:
                assignment.worker.rpc_lent.update(assignment.gpu_indexes)
        if isinstance(self.layout, ParallelLayout) and self.layout.ray_head_port:
            self.main.worker.ray_heads.add(self.layout.ray_head_port)


@dataclass(frozen=True)
class NoPlacement:
    reasons: list[str]
    hints: list[str] = field(default_factory=list)

    def message(self) -> str:
        lines = ["No worker can run this instance:"] + [f"- {reason}" for reason in self.reasons]
        lines += [f"Hint: {hint}" for hint in self.hints]
        return "\n".join(lines)
