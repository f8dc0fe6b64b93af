"""Model files: one copy of a model's files on a worker, downloaded once and kept until a user removes it."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from gpustack.schemas.models import LocalPath, SourceEnum, SourceText

MAX_BYTES = 1 << 60


class ModelFileState(str, Enum):
    DOWNLOADING = "downloading"
    READY = "ready"
    ERROR = "error"


class ModelFileSource(BaseModel):
    """The source fields of a model, as a file names where it came from (upstream GPUStack's names)."""

    source: SourceEnum
    local_path: LocalPath | None = None
    huggingface_repo_id: SourceText | None = None
    huggingface_filename: SourceText | None = None
    model_scope_model_id: SourceText | None = None
    model_scope_file_path: SourceText | None = None
    ollama_library_model_name: SourceText | None = None


class ModelFileClaim(ModelFileSource):
    """A worker says it holds (or is fetching) these files, for a model it was given."""

    model_id: int = Field(ge=1)

    model_config = ConfigDict(extra="forbid")


class ModelFileStateUpdate(BaseModel):
    """What a worker reports about a file it downloads."""

    state: ModelFileState
    state_message: str = Field(default="", max_length=20000)
    size: int | None = Field(default=None, ge=0, le=MAX_BYTES)
    downloaded_bytes: int = Field(default=0, ge=0, le=MAX_BYTES)
    download_speed: int = Field(default=0, ge=0, le=MAX_BYTES)
    download_progress: float = Field(default=0.0, ge=0.0, le=100.0)
    resolved_paths: list[str] = Field(default_factory=list, max_length=10000)

    model_config = ConfigDict(extra="forbid")


class ModelFilePublic(ModelFileSource):
    id: int
    worker_id: int
    worker_name: str
    cache_key: str
    state: ModelFileState
    state_message: str
    size: int | None
    downloaded_bytes: int
    download_speed: int
    download_progress: float
    resolved_paths: list[str]
    model_names: list[str]  # the models that use these files, as of the last report
    created_at: datetime
    updated_at: datetime

    model_config = ConfigDict(from_attributes=True)
