"""A snapshot of the cluster as the scheduler sees it, and what is still allocatable on it."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpustack.schemas.models import ResourceClaim


@dataclass(frozen=True)
class GPUSnapshot:
    index: int
    id: str
    name: str
    total: int
    reserved: int


@dataclass
class WorkerSnapshot:
    id: int
    name: str
    state: str
    state_message: str
    labels: dict[str, str]
    ram_total: int
    ram_reserved: int
    gpus: list[GPUSnapshot]
    unified_memory: bool = False
    # Claims of every instance placed on this worker, in any state (error and downloading included).
    claims: list[ResourceClaim] = field(default_factory=list)

    def allocatable_ram(self) -> int:
        claimed = sum(claim.ram for claim in self.claims)
        if self.unified_memory:
            # On unified memory a GPU claim is RAM too; count it once.
            claimed += sum(sum(claim.vram.values()) for claim in self.claims)
        return self.ram_total - self.ram_reserved - claimed

    def allocatable_vram(self, gpu: GPUSnapshot) -> int:
        claimed = sum(claim.vram.get(gpu.index, 0) for claim in self.claims)
        return gpu.total - gpu.reserved - claimed

    def add_claim(self, claim: ResourceClaim) -> None:
        self.claims.append(claim)
