"""What vLLM and MindIE share: reading a safetensors model folder, and the context length they are given."""

from __future__ import annotations

from gpustack.backends.errors import ModelUnreadable
from gpustack.estimate.safetensors import ModelFiles, SafetensorsError
from gpustack.sources.base import ModelReader, SourceError


def read_model(reader: ModelReader) -> ModelFiles:
    try:
        return reader.safetensors()
    except SourceError as exc:
        raise ModelUnreadable(str(exc)) from None
    except (SafetensorsError, OSError, ValueError) as exc:
        raise ModelUnreadable(f"cannot read the model in {reader.where}: {exc}") from None


def engine_max_len(requested: int | None, estimated: int, model_max: int | None) -> int | None:
    """The context the engine must be given so that it runs with what was estimated: GPUStack's default
    (8192) when the model allows more and the user set none; None when the engine's own choice (the
    model's length, or the user's flag) already is the estimate's."""
    if requested is not None or not model_max or model_max <= estimated:
        return None
    return estimated
