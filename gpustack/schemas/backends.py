"""What a worker has installed of each backend: for GET /v2/backends, reported in the worker's status."""

from __future__ import annotations

from pydantic import BaseModel, Field


class InstalledVersion(BaseModel):
    version: str
    origin: str  # bin-dir (a pinned or custom executable) or managed (a pip environment gpustack installed)
    path: str


class InstalledBackend(BaseModel):
    """One backend on one worker: its versions, the pinned default, and what runs a model naming none."""

    backend: str
    default_version: str | None = None
    versions: list[InstalledVersion] = Field(default_factory=list)
    # The executable a model without backend_version runs now; None when the default must be installed
    # first (it is, on first use) or nothing is found.
    executable: str | None = None


class WorkerBackends(InstalledBackend):
    """GET /v2/backends: an InstalledBackend with the worker it is on."""

    worker_id: int
    worker_name: str
