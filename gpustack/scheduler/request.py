"""What is to be placed: one instance of a model, with its backend's memory requirement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gpustack.estimate.llama_box import LlamaBoxEstimate
from gpustack.schemas.models import PlacementStrategy


@dataclass(frozen=True)
class LlamaBoxNeed:
    """llama-box (llama.cpp): any split of layers over GPUs, workers (RPC) and the CPU."""

    estimate: LlamaBoxEstimate


class GpuCheck(Protocol):
    def __call__(self, total: int, allocatable: int, tensor_parallel: int) -> str | None: ...


@dataclass(frozen=True)
class TensorParallelNeed:
    """vLLM and MindIE: whole GPUs, all alike in what they must hold, tensor parallel across them.

    `check` says why one GPU does not qualify at a given tensor-parallel size (None when it does);
    each chosen GPU is claimed at `utilization` of its total, as the engine takes that much.
    """

    check: GpuCheck
    num_attention_heads: int
    utilization: float
    ram: int = 0
    gpu_types: frozenset[str] = frozenset({"cuda", "rocm", "dcu"})
    linux_only: bool = True
    multi_worker: bool = False  # vLLM with Ray enabled; MindIE multi-node
    multi_worker_off_hint: str = ""


@dataclass(frozen=True)
class SingleDeviceNeed:
    """vox-box: one NVIDIA GPU, or the CPU."""

    vram: int
    ram_on_gpu: int
    ram_on_cpu: int
    gpu_types: frozenset[str] = frozenset({"cuda"})


Need = LlamaBoxNeed | TensorParallelNeed | SingleDeviceNeed


@dataclass(frozen=True)
class PlacementRequest:
    model_name: str
    backend: str
    need: Need
    placement_strategy: PlacementStrategy = PlacementStrategy.SPREAD
    worker_selector: dict[str, str] = field(default_factory=dict)
    gpu_ids: tuple[str, ...] = ()
    cpu_offloading: bool = True
    distributed_inference_across_workers: bool = True
