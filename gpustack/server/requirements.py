"""What a model needs, per backend, from its files' headers: the scheduler's input. Cached per file."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from gpustack.estimate.gguf import GGUFError, read_gguf_shards
from gpustack.estimate.gguf_mmproj import read_projector
from gpustack.estimate.llama_box import estimate_llama_box, parse_llama_box_options
from gpustack.estimate.llama_box_options import with_gpustack_defaults
from gpustack.estimate.mindie import estimate_mindie, parse_mindie_options
from gpustack.estimate.safetensors import SafetensorsError, read_local_model
from gpustack.estimate.vllm import estimate_vllm, parse_vllm_options
from gpustack.scheduler.needs import mindie_need, vllm_need
from gpustack.scheduler.request import LlamaBoxNeed, Need, SingleDeviceNeed
from gpustack.schemas.models import BackendEnum, ModelSpec

GiB = 1024**3


class EstimateError(Exception):
    """The model cannot be estimated (file unreadable, bad parameters); the message says what to fix."""


@dataclass(frozen=True)
class Requirement:
    need: Need
    description: str


@dataclass(frozen=True)
class _Key:
    path: str
    mtime: float
    size: int
    backend: str
    parameters: tuple[str, ...]
    ray: bool


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise EstimateError(
            f"cannot read {path} on the server to estimate its memory ({exc.strerror}); "
            "the file must exist at this absolute path on the server and on the workers"
        ) from None


def _llama_box(path: str, parameters: list[str]) -> Requirement:
    try:
        options = parse_llama_box_options(parameters)
    except ValueError as exc:
        raise EstimateError(f"backend parameters: {exc}") from None
    with_gpustack_defaults(options)
    try:
        shards = read_gguf_shards(path)
        projector = read_projector(path, options.mmproj, options.no_mmproj)
    except GGUFError as exc:
        raise EstimateError(str(exc)) from None
    estimate = estimate_llama_box(shards[0], options, shards, projector=projector)
    return Requirement(LlamaBoxNeed(estimate), estimate.describe())


def _tensor_parallel(path: str, backend: BackendEnum, parameters: list[str], ray: bool) -> Requirement:
    try:
        model = read_local_model(path)
    except (SafetensorsError, OSError, ValueError) as exc:
        raise EstimateError(f"cannot read the model in {path}: {exc}") from None
    try:
        if backend == BackendEnum.VLLM:
            vllm_options = parse_vllm_options(parameters)
            vllm = estimate_vllm(model, vllm_options)
            return Requirement(vllm_need(vllm, vllm_options, ray), vllm.describe())
        mindie_options = parse_mindie_options(parameters)
        mindie = estimate_mindie(model, mindie_options)
    except ValueError as exc:
        raise EstimateError(f"backend parameters: {exc}") from None
    return Requirement(mindie_need(mindie, mindie_options), mindie.describe())


def _vox_box(path: str) -> Requirement:
    """Speech models are small; their weights plus a margin for activations, on one GPU or in RAM."""
    if os.path.isdir(path):
        weights = sum(
            os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
        )
    else:
        weights = os.path.getsize(path)
    vram = int(weights * 1.2) + GiB // 2
    need = SingleDeviceNeed(vram=vram, ram_on_gpu=GiB // 2, ram_on_cpu=int(weights * 1.5) + GiB)
    return Requirement(need, f"vox-box: weights {weights / GiB:.2f} GiB, about {vram / GiB:.2f} GiB on a GPU")


class Requirements:
    """Requirements per model, computed from its files once per (file, backend, parameters)."""

    def __init__(self, ray_enabled: bool = False) -> None:
        self.ray_enabled = ray_enabled
        self._cache: dict[_Key, Requirement] = {}

    async def of(self, spec: ModelSpec) -> Requirement:
        return await asyncio.to_thread(self._of_blocking, spec)

    def _of_blocking(self, spec: ModelSpec) -> Requirement:
        path = spec.local_path or ""
        stat = _stat(path)
        key = _Key(
            path,
            stat.st_mtime,
            stat.st_size,
            spec.backend.value,
            tuple(spec.backend_parameters),
            self.ray_enabled,
        )
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if spec.backend == BackendEnum.LLAMA_BOX:
            requirement = _llama_box(path, spec.backend_parameters)
        elif spec.backend in (BackendEnum.VLLM, BackendEnum.ASCEND_MINDIE):
            requirement = _tensor_parallel(path, spec.backend, spec.backend_parameters, self.ray_enabled)
        else:
            requirement = _vox_box(path)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[key] = requirement
        return requirement
