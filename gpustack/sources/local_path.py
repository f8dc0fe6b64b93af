"""A model already on the machines, at an absolute path: a .gguf file (the first shard of a split one) or
a folder with config.json and *.safetensors. Nothing is downloaded; the path is its own cache key."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from gpustack.estimate.gguf import GGUFError, GGUFHeader, read_gguf_shards
from gpustack.estimate.gguf_mmproj import read_projector
from gpustack.estimate.safetensors import ModelFiles, SafetensorsError, read_local_model
from gpustack.sources.base import FileSet, ModelFormat, ModelReader, SourceError, SourceSettings

if TYPE_CHECKING:
    from gpustack.schemas.models import ModelSpec

_WEIGHTS = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".onnx")


class LocalReader:
    """ModelReader over files on this machine."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.where = path

    def gguf_shards(self) -> list[GGUFHeader]:
        try:
            return read_gguf_shards(self.path)
        except GGUFError as exc:
            raise SourceError(str(exc)) from None

    def projector(self, mmproj: str | None, no_mmproj: bool) -> GGUFHeader | None:
        try:
            return read_projector(self.path, mmproj, no_mmproj)
        except GGUFError as exc:
            raise SourceError(str(exc)) from None

    def safetensors(self) -> ModelFiles:
        try:
            return read_local_model(self.path)
        except (SafetensorsError, OSError, ValueError) as exc:
            raise SourceError(f"cannot read the model in {self.path}: {exc}") from None

    def weights_bytes(self) -> int:
        if os.path.isfile(self.path):
            return os.path.getsize(self.path)
        total = 0
        for root, _, names in os.walk(self.path):
            total += sum(os.path.getsize(os.path.join(root, n)) for n in names if n.endswith(_WEIGHTS))
        return total


class LocalPath:
    name = "local_path"
    fields: tuple[str, ...] = ("local_path",)

    def check(self, spec: ModelSpec) -> None:
        # The path is checked where it is needed: each backend that loads a model requires it (a custom
        # command may run without one).
        return None

    def describe(self, spec: ModelSpec) -> str:
        return spec.local_path or ""

    def model_format(self, spec: ModelSpec) -> ModelFormat:
        if not spec.local_path:
            return "unknown"
        return "gguf" if spec.local_path.lower().endswith(".gguf") else "safetensors"

    def cache_key(self, spec: ModelSpec) -> str | None:
        return None

    def reader(self, spec: ModelSpec, settings: SourceSettings) -> ModelReader:
        return LocalReader(spec.local_path or "")

    def file_set(self, spec: ModelSpec, settings: SourceSettings, backend: str) -> FileSet:
        return FileSet(files=(), main=spec.local_path or "")


SOURCE = LocalPath()
