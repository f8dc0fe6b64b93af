"""How the scheduler placed an instance, as typed data the worker reads: a mode, and a layout per kind of
backend (layers for llama-box, parallel sizes for vLLM and MindIE, nothing more for one device).

Instances placed before these types existed hold `{"mode": ..., "engine": {name: string}}`; they are read
into the same types (see PlacementDetail._from_engine_arguments), so a server upgrade needs no migration
and a worker never sees the old shape.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PlacementMode(str, Enum):
    GPU = "gpu"
    MULTI_GPU = "multi-gpu"
    RPC = "rpc"
    PARTIAL_OFFLOAD = "partial-offload"
    RPC_PARTIAL_OFFLOAD = "rpc-partial-offload"
    CPU = "cpu"
    TENSOR_PARALLEL = "tensor-parallel"
    MULTI_WORKER = "multi-worker"


class LayerLayout(BaseModel):
    """llama-box (llama.cpp): how many layers go to devices, split how, over which RPC servers."""

    kind: Literal["layers"] = "layers"
    gpu_layers: int | None = Field(default=None, ge=0)  # None: every layer on the devices it was given
    tensor_split: list[int] = Field(default_factory=list)  # layers per device, RPC servers first
    rpc: list[str] = Field(default_factory=list)  # host:port of RPC servers, in llama.cpp's device order
    threads: int | None = Field(default=None, ge=1)  # the CPU threads claimed for it (--threads)

    model_config = ConfigDict(extra="forbid", frozen=True)


class ParallelLayout(BaseModel):
    """vLLM and MindIE: parallel sizes over whole devices, on one worker or several."""

    kind: Literal["parallel"] = "parallel"
    tensor_parallel_size: int | None = Field(default=None, ge=1)  # None: the user's own flag decides
    pipeline_parallel_size: int | None = Field(default=None, ge=1)
    workers: int = Field(default=1, ge=1)
    devices_per_worker: int | None = Field(default=None, ge=1)  # MindIE multi-node: the same on each
    # The context the estimate sized the KV cache for, given to the engine when the user set none and the
    # model allows more (vLLM --max-model-len, MindIE maxSeqLen): what was estimated is what runs.
    max_model_len: int | None = Field(default=None, ge=1)
    # On the CPU (vLLM's CPU build): the GiB of KV cache the RAM claim includes (VLLM_CPU_KVCACHE_SPACE).
    cpu_kv_cache_gib: int | None = Field(default=None, ge=1)
    # Across workers through Ray (vLLM): the port of the Ray head the main worker starts, from the ports
    # that worker offers; the subordinate workers' Ray nodes join <main worker IP>:<this port>.
    ray_head_port: int | None = Field(default=None, ge=1, le=65535)

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceLayout(BaseModel):
    """One device or the CPU, nothing to split (vox-box, custom commands)."""

    kind: Literal["device"] = "device"

    model_config = ConfigDict(extra="forbid", frozen=True)


Layout = Annotated[LayerLayout | ParallelLayout | DeviceLayout, Field(discriminator="kind")]

_LAYER_KEYS = {"gpu_layers", "tensor_split", "rpc", "threads"}
_PARALLEL_KEYS = {"tensor_parallel_size", "pipeline_parallel_size", "workers", "devices_per_worker"}


def _split(text: str) -> list[str]:
    return [part for part in str(text).split(",") if part]


def layout_from_engine_arguments(engine: dict[str, Any]) -> dict[str, Any] | None:
    """A layout from the `engine` strings instances were stored with before layouts had types."""
    keys = set(engine)
    if keys & _LAYER_KEYS:
        layout: dict[str, Any] = {"kind": "layers"}
        if engine.get("gpu_layers") not in (None, ""):
            layout["gpu_layers"] = int(engine["gpu_layers"])
        if engine.get("tensor_split"):
            layout["tensor_split"] = [int(float(n)) for n in _split(engine["tensor_split"])]
        if engine.get("rpc"):
            layout["rpc"] = _split(engine["rpc"])
        if engine.get("threads"):
            layout["threads"] = int(engine["threads"])
        return layout
    if keys & _PARALLEL_KEYS:
        return {"kind": "parallel", **{k: int(v) for k, v in engine.items() if k in _PARALLEL_KEYS and v}}
    return None  # nothing the placement implied: the backend's defaults


class PlacementDetail(BaseModel):
    """How the scheduler placed an instance; `layout` None means the backend's defaults for the mode."""

    mode: PlacementMode
    layout: Layout | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_engine_arguments(cls, data: Any) -> Any:
        if isinstance(data, dict) and "engine" in data and "layout" not in data:
            engine = dict(data.get("engine") or {})
            data = {k: v for k, v in data.items() if k != "engine"}
            data["layout"] = layout_from_engine_arguments(engine)
        return data

    @property
    def rpc_servers(self) -> list[str]:
        """llama.cpp RPC servers the placement uses: the workers behind them lend their GPUs."""
        return list(self.layout.rpc) if isinstance(self.layout, LayerLayout) else []
