"""Workers and what they report: system status and accelerator devices."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from gpustack.schemas.backends import InstalledBackend


class WorkerState(str, Enum):
    READY = "ready"
    NOT_READY = "not_ready"
    UNREACHABLE = "unreachable"


class GPUType(str, Enum):
    CUDA = "cuda"
    ROCM = "rocm"
    DCU = "dcu"
    NPU = "npu"
    MUSA = "musa"
    COREX = "corex"
    MLU = "mlu"
    MPS = "mps"


class MemoryInfo(BaseModel):
    total: int = 0
    used: int = 0
    allocated: int = 0
    utilization_rate: float = 0.0
    is_unified_memory: bool = False


class CPUInfo(BaseModel):
    total: int = 0
    utilization_rate: float = 0.0


class SwapInfo(BaseModel):
    total: int = 0
    used: int = 0


class FileSystemInfo(BaseModel):
    mount_point: str
    total: int = 0
    used: int = 0
    free: int = 0


class OperatingSystemInfo(BaseModel):
    name: str = ""
    version: str = ""


class KernelInfo(BaseModel):
    name: str = ""
    release: str = ""
    version: str = ""
    architecture: str = ""


class UptimeInfo(BaseModel):
    uptime: float = 0.0
    boot_time: str = ""


class GPUCoreInfo(BaseModel):
    total: int = 0
    utilization_rate: float = 0.0


class GPUDevice(BaseModel):
    """One accelerator of a worker; `id` is `<worker name>:<type>:<index>`."""

    index: int
    name: str
    vendor: str
    type: GPUType
    uuid: str = ""
    id: str = ""
    memory: MemoryInfo = Field(default_factory=MemoryInfo)
    core: GPUCoreInfo = Field(default_factory=GPUCoreInfo)
    temperature: float | None = None
    virtual: bool = False
    # What the vendor's *_VISIBLE_DEVICES variable takes for this device: empty means its index;
    # a MIG instance needs its UUID ("MIG-...").
    visible_id: str = ""


class WorkerStatus(BaseModel):
    """What a worker's heartbeat reports about its machine."""

    cpu: CPUInfo = Field(default_factory=CPUInfo)
    memory: MemoryInfo = Field(default_factory=MemoryInfo)
    swap: SwapInfo = Field(default_factory=SwapInfo)
    filesystem: list[FileSystemInfo] = Field(default_factory=list)
    os: OperatingSystemInfo = Field(default_factory=OperatingSystemInfo)
    kernel: KernelInfo = Field(default_factory=KernelInfo)
    uptime: UptimeInfo = Field(default_factory=UptimeInfo)
    gpu_devices: list[GPUDevice] = Field(default_factory=list)
    # GPU index → port of the llama.cpp RPC server that lends that GPU to other workers' instances.
    rpc_servers: dict[int, int] = Field(default_factory=dict)
    # Ports where this worker can start a Ray head (vLLM across workers): the first port of each slot of
    # its --ray-port-range kept for heads; the scheduler gives each such instance one.
    ray_head_ports: list[int] = Field(default_factory=list)
    # What the worker has of each backend (GET /v2/backends).
    backends: list[InstalledBackend] = Field(default_factory=list)


class SystemReserved(BaseModel):
    """Memory kept back from scheduling, in bytes: RAM per worker, VRAM per GPU."""

    ram: int = 2 * 1024**3
    vram: int = 1 * 1024**3


class WorkerRegistration(BaseModel):
    """What a worker sends when it joins (and again whenever it restarts)."""

    name: str = Field(min_length=1, max_length=200)
    uuid: str = Field(min_length=1, max_length=64)
    hostname: str = ""
    ip: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    labels: dict[str, str] = Field(default_factory=dict)
    system_reserved: SystemReserved = Field(default_factory=SystemReserved)
    heartbeat_interval: float = Field(default=5.0, gt=0, le=600)
    status: WorkerStatus = Field(default_factory=WorkerStatus)
    # False when the worker cannot tell what it has (a GPU tool failed); state_message says why.
    healthy: bool = True
    state_message: str = Field(default="", max_length=20000)
    # The worker's gpustack version; a server refuses one it cannot work with (utils/versions.py).
    version: str = Field(default="", max_length=64)


class WorkerStatusReport(BaseModel):
    """A heartbeat: the current status, and why the worker is not usable if it is not."""

    status: WorkerStatus
    state_message: str = Field(default="", max_length=20000)
    healthy: bool = True


class WorkerUpdate(BaseModel):
    """What an admin may change on a worker."""

    labels: dict[str, str] | None = None

    model_config = ConfigDict(extra="forbid")


class WorkerPublic(BaseModel):
    id: int
    name: str
    hostname: str
    ip: str
    port: int
    labels: dict[str, str]
    state: WorkerState
    state_message: str
    status: WorkerStatus
    system_reserved: SystemReserved
    heartbeat_interval: float
    last_heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime

    model_config = ConfigDict(from_attributes=True)


class WorkerRegistered(WorkerPublic):
    """The answer to a registration: the worker, and the credential it uses from then on (the cluster
    token only registers). Sent to the registering worker only."""

    credential: str
    server_version: str = ""
