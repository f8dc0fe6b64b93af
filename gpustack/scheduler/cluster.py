"""The cluster as the scheduler sees it: workers, their GPUs, and what is still allocatable on each."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpustack.scheduler.cpu_threads import CPU_OVERSUBSCRIPTION
from gpustack.schemas.models import ResourceClaim

UNLIMITED_THREADS = 1 << 30  # a worker that does not say how many cores it has


@dataclass(frozen=True)
class GPUSnapshot:
    index: int
    id: str  # <worker name>:<type>:<index>
    name: str
    type: str  # cuda, rocm, dcu, npu, musa, corex, mlu, mps
    vendor: str
    total: int
    reserved: int = 0  # system reserved VRAM
    rpc_port: int | None = None  # its llama.cpp RPC server, through which other workers can use it


@dataclass
class WorkerSnapshot:
    """A worker with every claim already on it counted (instances in any state, main or subordinate).

    Allocatable memory is kept up to date as claims are added, so each check is O(1). With unified memory
    (Apple silicon) RAM and VRAM are one pool: `ram_free` is what is left of the pool after every claim,
    RAM and VRAM alike, and a GPU's `vram_free` is the smaller of what its own limit and the pool allow;
    a placement must fit its VRAM and RAM together into `ram_free` (see `fits_memory`).
    """

    id: int
    name: str
    state: str
    labels: dict[str, str]
    ram_total: int
    ram_reserved: int
    gpus: list[GPUSnapshot]
    state_message: str = ""
    ip: str = ""
    unified_memory: bool = False
    cpu_cores: int = 0  # logical cores; 0 = unknown, CPU threads are then not limited
    instances: int = 0  # how many instances (or parts of one) it already serves; spread reads it
    ram_free: int = 0
    vram_free: dict[int, int] = field(default_factory=dict)
    cpu_threads_free: int = 0
    # GPUs already lent to an instance through their llama.cpp RPC server, which serves one at a time.
    rpc_lent: set[int] = field(default_factory=set)
    # Ports where this worker can start a Ray head for an instance across workers (vLLM), and those that
    # instances placed here already hold.
    ray_head_ports: tuple[int, ...] = ()
    ray_heads: set[int] = field(default_factory=set)
    gpu_types: frozenset[str] = frozenset()
    max_vram_free: int = 0  # the roomiest GPU's allocatable memory: most refusals need only this
    os: str = ""  # the built-in label os
    _gpu_left: dict[int, int] = field(default_factory=dict, init=False, repr=False)  # unified: GPU limits

    def __post_init__(self) -> None:
        self.ram_free = self.ram_total - self.ram_reserved
        self.vram_free = {gpu.index: gpu.total - gpu.reserved for gpu in self.gpus}
        if self.unified_memory:
            self._gpu_left = dict(self.vram_free)
            self._clip_to_pool()
        self.gpu_types = frozenset(gpu.type for gpu in self.gpus)
        self.max_vram_free = max(self.vram_free.values(), default=0)
        self.os = self.labels.get("os", "")
        self.cpu_threads_free = self.cpu_threads_total

    @property
    def cpu_threads_total(self) -> int:
        return self.cpu_cores * CPU_OVERSUBSCRIPTION if self.cpu_cores > 0 else UNLIMITED_THREADS

    def free_ray_head_port(self) -> int | None:
        return next((port for port in self.ray_head_ports if port not in self.ray_heads), None)

    def gpu(self, index: int) -> GPUSnapshot | None:
        return next((gpu for gpu in self.gpus if gpu.index == index), None)

    def fits_memory(self, ram: int, vram_total: int) -> bool:
        """Whether `ram` of RAM beside `vram_total` of VRAM fit (each GPU's share checked by the caller)."""
        if self.unified_memory:
            return ram + vram_total <= self.ram_free
        return ram <= self.ram_free

    def ram_room(self, vram_total: int) -> int:
        """RAM allocatable beside a VRAM claim of `vram_total`: on unified memory that VRAM is RAM too."""
        return self.ram_free - vram_total if self.unified_memory else self.ram_free

    def add_claim(self, claim: ResourceClaim) -> None:
        self.instances += 1
        self.ram_free -= claim.ram
        self.cpu_threads_free -= claim.cpu_threads
        if self.unified_memory:
            for index, amount in claim.vram.items():
                index = int(index)
                self.ram_free -= amount  # one pool: a GPU claim is RAM too, counted once
                self._gpu_left[index] = self._gpu_left.get(index, 0) - amount
            self._clip_to_pool()
        else:
            for index, amount in claim.vram.items():
                index = int(index)
                self.vram_free[index] = self.vram_free.get(index, 0) - amount
        self.max_vram_free = max(self.vram_free.values(), default=0)

    def _clip_to_pool(self) -> None:
        self.vram_free = {index: min(left, self.ram_free) for index, left in self._gpu_left.items()}
