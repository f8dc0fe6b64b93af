"""What a model needs, from its files' headers through its backend: the scheduler's input. Cached per model.

Headers are read where the files are: on the server's disk for a local path, from the hub for the other
sources (by range requests, never the weights), and from a worker that has the file when a local path
exists only on workers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gpustack.backends.base import Requirement
from gpustack.backends.errors import ModelUnreadable, UnknownBackend
from gpustack.backends.registry import backend_of
from gpustack.schemas.models import ModelSpec, SourceEnum
from gpustack.sources.base import ModelReader, SourceError, SourceSettings
from gpustack.sources.registry import SOURCE_FIELDS, source_of
from gpustack.sources.worker_files import WorkerEndpoint, read_on_workers

__all__ = ["EstimateError", "Requirement", "Requirements", "WorkerEndpoint"]

# A remote model's headers are read again after this long (a repository can change), and a failure
# (a missing repository, a hub that is down) is retried after the shorter time, not on every round.
REMOTE_TTL_SECONDS = 3600.0
FAILURE_TTL_SECONDS = 30.0


class EstimateError(Exception):
    """The model cannot be estimated (file unreadable, bad parameters); the message says what to fix."""


@dataclass(frozen=True)
class _Key:
    path: str
    mtime: float
    size: int
    spec: str  # the fields a backend reads, as JSON
    ray: bool


@dataclass
class _Entry:
    outcome: Requirement | EstimateError
    expires: float


def _stat(path: str) -> tuple[float, int] | None:
    if not path:
        return 0.0, 0
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime, stat.st_size


class Requirements:
    """Requirements per model, computed from its files once per (files, backend, parameters)."""

    def __init__(self, ray_enabled: bool = False, settings: SourceSettings | None = None) -> None:
        self.ray_enabled = ray_enabled
        self.settings = settings if settings is not None else SourceSettings.of()
        self._cache: dict[_Key, _Entry] = {}

    def _key(self, spec: ModelSpec) -> tuple[_Key, bool]:
        """The cache key, and whether the files are on the server's own disk."""
        fields = spec.model_dump_json(
            include={  # env: vLLM's CPU estimate reads VLLM_CPU_KVCACHE_SPACE from it
                "source",
                "backend",
                "backend_parameters",
                "env",
                "run_command",
                "resources",
                *SOURCE_FIELDS,
            }
        )
        path = spec.local_path or "" if spec.source == SourceEnum.LOCAL_PATH else ""
        stat = _stat(path)
        mtime, size = stat if stat is not None else (-1.0, -1)
        return _Key(path, mtime, size, fields, self.ray_enabled), stat is not None

    def known(self, spec: ModelSpec) -> bool:
        """Whether `of` answers from the cache (no file or network reading)."""
        entry = self._cache.get(self._key(spec)[0])
        return entry is not None and entry.expires > time.monotonic()

    async def of(self, spec: ModelSpec, workers: Sequence[WorkerEndpoint] = ()) -> Requirement:
        return await asyncio.to_thread(self._of_blocking, spec, tuple(workers))

    def _of_blocking(self, spec: ModelSpec, workers: tuple[WorkerEndpoint, ...]) -> Requirement:
        key, on_server = self._key(spec)
        entry = self._cache.get(key)
        if entry is None or entry.expires <= time.monotonic():
            try:
                outcome: Requirement | EstimateError = self._compute(spec, on_server, workers)
            except EstimateError as exc:
                outcome = exc
            if isinstance(outcome, EstimateError):
                expires = time.monotonic() + FAILURE_TTL_SECONDS
            elif spec.source == SourceEnum.LOCAL_PATH and on_server:
                expires = float("inf")  # the key holds the file's mtime and size: a change is a new key
            else:
                expires = time.monotonic() + REMOTE_TTL_SECONDS
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[key] = entry = _Entry(outcome, expires)
        if isinstance(entry.outcome, EstimateError):
            raise entry.outcome
        return entry.outcome

    def _reader(self, spec: ModelSpec, on_server: bool, workers: tuple[WorkerEndpoint, ...]) -> ModelReader:
        if spec.source != SourceEnum.LOCAL_PATH or on_server or not spec.local_path:
            return source_of(spec.source).reader(spec, self.settings)
        # The file is not on the server: read its header from a worker that has it.
        return read_on_workers(spec.local_path, workers)

    def _compute(self, spec: ModelSpec, on_server: bool, workers: tuple[WorkerEndpoint, ...]) -> Requirement:
        try:
            backend = backend_of(spec.backend)
        except UnknownBackend as exc:
            raise EstimateError(str(exc)) from None
        try:
            backend.check_spec(spec)
        except ValueError as exc:
            raise EstimateError(str(exc)) from None
        try:
            options = backend.parse_options(spec.backend_parameters)
        except (ValueError, ArithmeticError) as exc:
            raise EstimateError(f"backend parameters: {exc}") from None
        try:
            reader = self._reader(spec, on_server, workers)
            return backend.requirement(spec, options, self.ray_enabled, reader)
        except (ModelUnreadable, SourceError) as exc:
            raise EstimateError(str(exc)) from None
        except ValueError as exc:
            raise EstimateError(f"backend parameters: {exc}") from None
