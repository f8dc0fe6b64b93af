"""Models (what a user deploys) and model instances (one running copy of a model on a worker)."""

from __future__ import annotations

import ntpath
import posixpath
import re
from datetime import datetime
from enum import Enum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from gpustack.schemas.engine_settings import check_backend_parameters, check_environment
from gpustack.schemas.placement import PlacementDetail
from gpustack.schemas.routes import OpenAIRoute


class SourceEnum(str, Enum):
    LOCAL_PATH = "local_path"
    HUGGING_FACE = "huggingface"
    MODEL_SCOPE = "modelscope"
    OLLAMA_LIBRARY = "ollama_library"


class BackendEnum(str, Enum):
    LLAMA_BOX = "llama-box"
    VLLM = "vllm"
    VOX_BOX = "vox-box"
    ASCEND_MINDIE = "ascend-mindie"
    CUSTOM = "custom"


class PlacementStrategy(str, Enum):
    BINPACK = "binpack"
    SPREAD = "spread"


class ModelInstanceState(str, Enum):
    PENDING = "pending"
    ANALYZING = "analyzing"
    SCHEDULED = "scheduled"
    INITIALIZING = "initializing"
    DOWNLOADING = "downloading"
    STARTING = "starting"
    RUNNING = "running"
    ERROR = "error"
    UNREACHABLE = "unreachable"


# States in which a worker owns the instance and should have (or be bringing up) an engine for it.
ACTIVE_STATES = frozenset(
    {
        ModelInstanceState.SCHEDULED,
        ModelInstanceState.INITIALIZING,
        ModelInstanceState.DOWNLOADING,
        ModelInstanceState.STARTING,
        ModelInstanceState.RUNNING,
        ModelInstanceState.UNREACHABLE,
    }
)

# At most 200 characters, so that instance names (<model>-<8 hex>) fit the 255-character columns.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_parameters(value: list[str]) -> list[str]:
    for item in value:
        if not item.strip():
            raise ValueError("backend_parameters must not contain empty strings")
        if "\x00" in item or "\n" in item:
            raise ValueError(f"backend parameter {item[:40]!r} contains a control character")
    return value


def _check_env(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not _ENV_NAME_RE.match(key):
            raise ValueError(
                f"environment variable name {key!r} is invalid: use letters, digits and _ "
                "and do not start with a digit"
            )
    return value


def _check_local_path(value: str) -> str:
    if not (posixpath.isabs(value) or ntpath.isabs(value)):
        raise ValueError(f"local_path must be an absolute path, got {value!r}")
    if "\x00" in value:
        raise ValueError("local_path contains a NUL character")
    return value


_SIZE_UNITS = {"gib": 1024**3, "gb": 10**9, "mib": 1024**2, "mb": 10**6, "kib": 1024, "kb": 1000, "b": 1}


def _size(value: object) -> object:
    """Bytes from a number or a string such as '8GiB' or '512 MiB'; anything else is left to pydantic."""
    if not isinstance(value, str):
        return value
    text = value.strip().replace(" ", "").lower()
    for suffix, factor in _SIZE_UNITS.items():
        if text.endswith(suffix):
            try:
                return int(float(text[: -len(suffix)]) * factor)
            except (ValueError, OverflowError):  # not a number, or inf: pydantic then says what it wants
                break
    return value


def _check_health_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() or c in "\x00#" for c in value):
        raise ValueError(f"health_path must be a URL path starting with /, such as /health; got {value!r}")
    return value


def _check_run_command(value: str) -> str:
    if "\x00" in value:
        raise ValueError("run_command contains a NUL character, which no command line can hold")
    return value


def _check_source_text(value: str) -> str:
    value = value.strip()
    if not value or any(ord(c) < 32 for c in value):
        raise ValueError("must be a non-empty name without control characters")
    return value


BackendParameters = Annotated[list[str], AfterValidator(_check_parameters)]
# A repository id, file name or pattern, or Ollama model name; each source checks its own form.
SourceText = Annotated[str, Field(max_length=255), AfterValidator(_check_source_text)]
Environment = Annotated[dict[str, str], AfterValidator(_check_env)]
LocalPath = Annotated[str, AfterValidator(_check_local_path)]


def _fit_to_run(value: list[str]) -> list[str]:
    check_backend_parameters(value)
    return value


def _fit_to_run_env(value: dict[str, str]) -> dict[str, str]:
    check_environment(value)
    return value


# What create and update accept: also what an engine can safely be started with. Not checked on stored
# views, so that a model saved before these checks still lists, and its worker says what to change.
ParametersInput = Annotated[BackendParameters, AfterValidator(_fit_to_run)]
EnvironmentInput = Annotated[Environment, AfterValidator(_fit_to_run_env)]


class GPUSelector(BaseModel):
    """Manual placement: exactly these GPUs, by id `<worker name>:<type>:<index>`."""

    gpu_ids: list[str] = Field(min_length=1)

    model_config = ConfigDict(extra="forbid")


MAX_SIZE = 1 << 60  # an exbibyte: beyond any machine, and within every database's integers
Size = Annotated[int, BeforeValidator(_size), Field(ge=0, le=MAX_SIZE)]
HealthPath = Annotated[str, Field(max_length=255), AfterValidator(_check_health_path)]
RunCommand = Annotated[str, Field(max_length=16 * 1024), AfterValidator(_check_run_command)]
# A version names a folder and a file (<backend>_<version>): no separators, no leading dot.
BackendVersion = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")]


class StatedResources(BaseModel):
    """What a custom engine holds, as its user states it: the scheduler cannot estimate an arbitrary command.
    Sizes in bytes or with a unit ("8GiB")."""

    ram: Size = 0
    vram: Size = 0  # on its GPU
    gpus: int = Field(default=0, ge=0, le=1)  # 0: the CPU only; 1: one GPU of any kind

    model_config = ConfigDict(extra="forbid")


class ModelSpec(BaseModel):
    """Fields a user sets on a model; shared by create, update and the public view."""

    description: str = Field(default="", max_length=2000)
    # Where the files come from (gpustack/sources): each source reads its own fields, named as upstream
    # GPUStack's so that its clients work; the others stay unset.
    source: SourceEnum = SourceEnum.LOCAL_PATH
    local_path: LocalPath | None = None
    huggingface_repo_id: SourceText | None = None
    huggingface_filename: SourceText | None = None  # a name or a pattern (*Q4_K_M.gguf) in the repository
    model_scope_model_id: SourceText | None = None
    model_scope_file_path: SourceText | None = None
    ollama_library_model_name: SourceText | None = None  # qwen2.5:0.5b
    backend: BackendEnum = BackendEnum.LLAMA_BOX
    backend_version: BackendVersion | None = None
    backend_parameters: BackendParameters = Field(default_factory=list)
    # backend custom: the command that starts the engine, with {model_path} {port} {host} {model_name}
    # {gpu_indexes} filled in (upstream GPUStack 2.x's field), where it answers readiness, what it serves,
    # and what it holds (None: nothing).
    run_command: RunCommand | None = None
    health_path: HealthPath | None = None
    routes: list[OpenAIRoute] | None = None
    resources: StatedResources | None = None
    env: Environment = Field(default_factory=dict)
    replicas: int = Field(default=1, ge=0, le=64)
    placement_strategy: PlacementStrategy = PlacementStrategy.SPREAD
    worker_selector: dict[str, str] = Field(default_factory=dict)
    gpu_selector: GPUSelector | None = None
    cpu_offloading: bool = True
    distributed_inference_across_workers: bool = True
    restart_on_error: bool = True


def check_source_fields(spec: ModelSpec) -> None:
    """Raise ValueError unless the fields the source and backend need are present and consistent, and the
    backend parameters have values of the right kind (the backend's own checks, see gpustack/backends)."""
    from gpustack.backends.registry import backend_of  # the backends import these schemas
    from gpustack.sources.registry import check_source

    check_source(spec)
    backend = backend_of(spec.backend)
    backend.check_spec(spec)
    try:
        backend.parse_options(spec.backend_parameters)
    except (ValueError, ArithmeticError) as exc:  # ArithmeticError: a number too large to hold
        raise ValueError(f"backend_parameters: {exc}") from None


class ModelCreate(ModelSpec):
    name: str
    backend_parameters: ParametersInput = Field(default_factory=list)
    env: EnvironmentInput = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                "name must be 1-200 characters of letters, digits and . _ : / @ + -, "
                "starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _check_source(self) -> ModelCreate:
        check_source_fields(self)
        return self


class ModelUpdate(BaseModel):
    """A partial update; fields left out keep their value."""

    description: str | None = Field(default=None, max_length=2000)
    source: SourceEnum | None = None
    local_path: LocalPath | None = None
    huggingface_repo_id: SourceText | None = None
    huggingface_filename: SourceText | None = None
    model_scope_model_id: SourceText | None = None
    model_scope_file_path: SourceText | None = None
    ollama_library_model_name: SourceText | None = None
    backend_version: BackendVersion | None = None
    backend_parameters: ParametersInput | None = None
    run_command: RunCommand | None = None
    health_path: HealthPath | None = None
    routes: list[OpenAIRoute] | None = None
    resources: StatedResources | None = None
    env: EnvironmentInput | None = None
    replicas: int | None = Field(default=None, ge=0, le=64)
    placement_strategy: PlacementStrategy | None = None
    worker_selector: dict[str, str] | None = None
    gpu_selector: GPUSelector | None = None
    cpu_offloading: bool | None = None
    distributed_inference_across_workers: bool | None = None
    restart_on_error: bool | None = None

    model_config = ConfigDict(extra="forbid")


class ModelPublic(ModelSpec):
    id: int
    name: str
    ready_replicas: int
    created_at: datetime
    updated_at: datetime

    model_config = ConfigDict(from_attributes=True)


class ResourceClaim(BaseModel):
    """What an instance holds on its worker: RAM, VRAM per GPU index, and CPU threads (llama.cpp's
    --threads where it computes on the CPU). Stored as JSON: fields added later default to 0."""

    ram: int = 0
    vram: dict[int, int] = Field(default_factory=dict)
    offload_layers: int = 0
    total_layers: int = 0
    cpu_threads: int = 0


class SubordinateWorker(BaseModel):
    """Another worker that serves part of a distributed instance (llama.cpp RPC servers, Ray workers)."""

    worker_id: int
    worker_name: str
    worker_ip: str
    gpu_indexes: list[int]
    claim: ResourceClaim


class ModelInstancePublic(BaseModel):
    id: int
    name: str
    model_id: int
    model_name: str
    worker_id: int | None
    worker_name: str | None
    worker_ip: str | None
    port: int | None
    pid: int | None
    state: ModelInstanceState
    state_message: str
    restart_count: int
    last_restart_at: datetime | None
    computed_resource_claim: ResourceClaim | None
    gpu_indexes: list[int]
    subordinate_workers: list[SubordinateWorker] = Field(default_factory=list)
    placement: PlacementDetail | None = None
    resolved_path: str | None
    created_at: datetime
    updated_at: datetime

    model_config = ConfigDict(from_attributes=True)


class ModelInstanceStateUpdate(BaseModel):
    """What a worker reports about an instance it runs."""

    worker_id: int
    state: ModelInstanceState
    state_message: str = Field(default="", max_length=20000)
    port: int | None = Field(default=None, ge=1, le=65535)
    pid: int | None = None
    resolved_path: str | None = None

    model_config = ConfigDict(extra="forbid")
