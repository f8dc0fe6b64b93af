"""Checks of a model's fields that several backends share."""

from __future__ import annotations

from gpustack.schemas.models import ModelSpec, SourceEnum
from gpustack.sources.base import ModelReader
from gpustack.sources.local_path import LocalReader
from gpustack.sources.registry import source_of

_CUSTOM_ONLY = ("run_command", "health_path", "routes", "resources")


def refuse_custom_fields(spec: ModelSpec, backend: str) -> None:
    """The fields of a custom command mean nothing to a built-in backend: say so instead of ignoring them."""
    given = [name for name in _CUSTOM_ONLY if getattr(spec, name) is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} only for backend custom; the {backend} "
            "backend builds its own command, probe and routes (remove them, or set backend to custom)"
        )


def require_local_path(spec: ModelSpec) -> str:
    if spec.source == SourceEnum.LOCAL_PATH and not spec.local_path:
        raise ValueError("local_path is required when source is local_path")
    return spec.local_path or ""


def require_model_directory(spec: ModelSpec, backend: str) -> str:
    """vLLM and MindIE read a folder of config.json and *.safetensors, never a GGUF file."""
    path = require_local_path(spec)
    if source_of(spec.source).model_format(spec) == "gguf":
        if spec.source == SourceEnum.LOCAL_PATH:
            raise ValueError(
                f"the {backend} backend needs the absolute path of a model directory "
                "with config.json and *.safetensors files; use llama-box for .gguf files"
            )
        raise ValueError(
            f"the {backend} backend loads a safetensors repository, not a .gguf file: leave the file name "
            "out, or use llama-box for .gguf files"
        )
    return path


def require_gguf(spec: ModelSpec, backend: str) -> None:
    """llama.cpp runs one GGUF file (the first shard of a split one)."""
    require_local_path(spec)
    if source_of(spec.source).model_format(spec) == "gguf":
        return
    if spec.source == SourceEnum.LOCAL_PATH:
        raise ValueError(
            f"the {backend} backend needs the absolute path of a .gguf file "
            "(for a sharded model, the first shard, -00001-of-0000N.gguf)"
        )
    field = {
        SourceEnum.HUGGING_FACE: "huggingface_filename",
        SourceEnum.MODEL_SCOPE: "model_scope_file_path",
    }.get(spec.source, "the file name")
    raise ValueError(
        f"the {backend} backend runs a .gguf file: set {field} to its name or a pattern such as "
        "*Q4_K_M.gguf (use vllm for a safetensors repository)"
    )


def reader_of(spec: ModelSpec, model: ModelReader | None) -> ModelReader:
    """The reader the server gives a backend (remote sources, files only on workers), else the local one."""
    return model if model is not None else LocalReader(spec.local_path or "")
