"""What a model needs, from its files' headers through its backend: the scheduler's input. Cached per file."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from gpustack.backends.base import Requirement
from gpustack.backends.errors import ModelUnreadable, UnknownBackend
from gpustack.backends.registry import backend_of
from gpustack.schemas.models import ModelSpec

__all__ = ["EstimateError", "Requirement", "Requirements"]


class EstimateError(Exception):
    """The model cannot be estimated (file unreadable, bad parameters); the message says what to fix."""


@dataclass(frozen=True)
class _Key:
    path: str
    mtime: float
    size: int
    spec: str  # the fields a backend reads, as JSON
    ray: bool


def _stat(path: str) -> tuple[float, int]:
    if not path:
        return 0.0, 0
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise EstimateError(
            f"cannot read {path} on the server to estimate its memory ({exc.strerror}); "
            "the file must exist at this absolute path on the server and on the workers"
        ) from None
    return stat.st_mtime, stat.st_size


class Requirements:
    """Requirements per model, computed from its files once per (file, backend, parameters)."""

    def __init__(self, ray_enabled: bool = False) -> None:
        self.ray_enabled = ray_enabled
        self._cache: dict[_Key, Requirement] = {}

    async def of(self, spec: ModelSpec) -> Requirement:
        return await asyncio.to_thread(self._of_blocking, spec)

    def _of_blocking(self, spec: ModelSpec) -> Requirement:
        try:
            backend = backend_of(spec.backend)
        except UnknownBackend as exc:
            raise EstimateError(str(exc)) from None
        mtime, size = _stat(spec.local_path or "")
        fields = spec.model_dump_json(
            include={"backend", "backend_parameters", "local_path", "run_command", "resources"}
        )
        key = _Key(spec.local_path or "", mtime, size, fields, self.ray_enabled)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            backend.check_spec(spec)
        except ValueError as exc:
            raise EstimateError(str(exc)) from None
        try:
            options = backend.parse_options(spec.backend_parameters)
        except (ValueError, ArithmeticError) as exc:
            raise EstimateError(f"backend parameters: {exc}") from None
        try:
            requirement = backend.requirement(spec, options, self.ray_enabled)
        except ModelUnreadable as exc:
            raise EstimateError(str(exc)) from None
        except ValueError as exc:
            raise EstimateError(f"backend parameters: {exc}") from None
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[key] = requirement
        return requirement
