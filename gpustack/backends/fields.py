"""Checks of a model's fields that several backends share."""

from __future__ import annotations

from gpustack.schemas.models import ModelSpec, SourceEnum

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
    if path.lower().endswith(".gguf"):
        raise ValueError(
            f"the {backend} backend needs the absolute path of a model directory "
            "with config.json and *.safetensors files; use llama-box for .gguf files"
        )
    return path
