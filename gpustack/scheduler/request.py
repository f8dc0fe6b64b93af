"""What is to be placed: one instance of a model, with its backend's memory requirement."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from gpustack.estimate.llama_box import LlamaBoxEstimate
from gpustack.scheduler.fit.layer_plan import LayerPlanner
from gpustack.schemas.models import PlacementStrategy


@dataclass(frozen=True)
class LlamaBoxNeed:
    """llama-box (llama.cpp): any split of layers over GPUs, workers (RPC) and the CPU.

    The estimate carries the user's options; those that fix the placement are read from it here.
    """

    estimate: LlamaBoxEstimate

    @cached_property
    def planner(self) -> LayerPlanner:
        """Layer splits and their memory in closed form; made once per requirement, reused per placement."""
        return LayerPlanner(self.estimate)

    @property
    def gpu_layers(self) -> int | None:
        """The user's -ngl, capped at the model's layers; None when the scheduler chooses."""
        layers = self.estimate.options.gpu_layers
        return None if layers is None else min(layers, self.estimate.total_layers)

    @property
    def threads(self) -> int | None:
        """The user's -t (0 = every core); None = llama.cpp's default."""
        return self.estimate.options.threads

    @property
    def threads_batch(self) -> int | None:
        """The user's -tb (0 = every core); None = the same as -t."""
        return self.estimate.options.threads_batch


class GpuCheck(Protocol):
    def __call__(self, total: int, allocatable: int, tensor_parallel: int) -> str | None: ...


@dataclass(frozen=True)
class FixedParallel:
    """The user's parallel sizes: exactly `devices` GPUs, each checked at `tensor_parallel`; `flags` says
    how they were set (for messages)."""

    devices: int
    tensor_parallel: int
    flags: str


class ParallelOptions(Protocol):
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    parallel_given: bool

    @property
    def devices(self) -> int: ...


def fixed_parallel(options: ParallelOptions) -> FixedParallel | None:
    """The device count the user's -tp/-pp/-dp fix, if they set any of them."""
    if not options.parallel_given:
        return None
    flags = [f"--tensor-parallel-size {options.tensor_parallel_size}"]
    if options.pipeline_parallel_size > 1:
        flags.append(f"--pipeline-parallel-size {options.pipeline_parallel_size}")
    if options.data_parallel_size > 1:
        flags.append(f"--data-parallel-size {options.data_parallel_size}")
    return FixedParallel(options.devices, options.tensor_parallel_size, " x ".join(flags))


@dataclass(frozen=True)
class CpuNeed:
    """An engine that also runs on the CPU alone, on a worker without GPUs of its kinds (vLLM's CPU build):
    the RAM it takes there, and the KV cache that RAM includes, which the engine is told to allocate."""

    ram: int
    kv_cache_gib: int | None = None
    description: str = ""


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
    num_key_value_heads: int = 0  # vLLM also needs tp to divide the KV heads, or the KV heads to divide tp
    power_of_two: bool = False  # MindIE's tensor parallel sizes are powers of 2
    equal_per_worker: bool = False  # MindIE multi-node: the same number of NPUs on every node
    fixed: FixedParallel | None = None  # the user's own -tp/-pp/-dp
    max_model_len: int | None = None  # the context the estimate assumed, for the engine (ParallelLayout)
    cpu: CpuNeed | None = None  # how it runs on a worker without GPUs of its kinds; None: it cannot
    ray: bool = False  # several workers form a Ray cluster, its head on the main worker (vLLM)


@dataclass(frozen=True)
class SingleDeviceNeed:
    """vox-box: one NVIDIA GPU, or the CPU; custom commands: what their user states (one GPU of any kind, or
    the CPU only when `gpu_types` is empty)."""

    vram: int
    ram_on_gpu: int
    ram_on_cpu: int
    gpu_types: frozenset[str] = frozenset({"cuda"})
    cpu_fallback: bool = True  # whether it may run on the CPU when no GPU fits


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
