"""The cluster as the scheduler sees it: workers, their GPUs, and what is still allocatable on each."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpustack.schemas.models import ResourceClaim


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

    Allocatable memory is kept up to date as claims are added, so each check is O(1).
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
    instances: int = 0  # how many instances (or parts of one) it already serves; spread reads it
    ram_free: int = 0
    vram_free: dict[int, int] = field(default_factory=dict)
    # GPUs already lent to an instance through their llama.cpp RPC server, which serves one at a time.
    rpc_lent: set[int] = field(default_factory=set)
    gpu_types: frozenset[str] = frozenset()
    max_vram_free: int = 0  # the roomiest GPU's allocatable memory: most refusals need only this
    os: str = ""  # the built-in label os

    def __post_init__(self) -> None:
        self.ram_free = self.ram_total - self.ram_reserved
        self.vram_free = {gpu.index: gpu.total - gpu.reserved for gpu in self.gpus}
        self.gpu_types = frozenset(gpu.type for gpu in self.gpus)
        self.max_vram_free = max(self.vram_free.values(), default=0)
        self.os = self.labels.get("os", "")

    def gpu(self, index: int) -> GPUSnapshot | None:
        return next((gpu for gpu in self.gpus if gpu.index == index), None)

    def add_claim(self, claim: ResourceClaim) -> None:
        self.instances += 1
        self.ram_free -= claim.ram
        for index, amount in claim.vram.items():
            index = int(index)
            self.vram_free[index] = self.vram_free.get(index, 0) - amount
            if self.unified_memory:
                # On unified memory a GPU claim is RAM too: the same bytes, counted once against both.
                self.ram_free -= amount
        if self.unified_memory and claim.ram:
            for index in self.vram_free:
                self.vram_free[index] -= claim.ram
        self.max_vram_free = max(self.vram_free.values(), default=0)
