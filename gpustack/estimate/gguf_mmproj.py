"""Multimodal projector files (mmproj*.gguf): finding the one that goes with a model, and its memory."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from gpustack.estimate.gguf import GGUFError, GGUFHeader, read_gguf_header

MMPROJ_PREFIX = "mmproj"


@dataclass
class ProjectorEstimate:
    """What llama.cpp's clip context allocates for a projector: its weights and one compute buffer."""

    path: str
    weights_bytes: int
    compute_bytes: int
    modalities: tuple[str, ...]  # "vision", "audio"

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.compute_bytes


def find_projector(model_path: str | os.PathLike[str]) -> str | None:
    """The projector file next to a model (`mmproj*.gguf` in its folder), if there is exactly one.

    Several candidates (say F16 and Q8_0 projectors) are ambiguous: then the caller must name one with
    --mmproj, and None is returned.
    """
    folder = os.path.dirname(os.path.abspath(os.fspath(model_path)))
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    found = sorted(n for n in names if n.lower().startswith(MMPROJ_PREFIX) and n.lower().endswith(".gguf"))
    return os.path.join(folder, found[0]) if len(found) == 1 else None


def is_projector(header: GGUFHeader) -> bool:
    return header.architecture == "clip" or any(k.startswith("clip.has_") for k in header.metadata)


def _encoder_compute(header: GGUFHeader, prefix: str, tokens: int, flash_attn: bool) -> int:
    """Activations of one encoder pass over `tokens` patches or audio frames (f32)."""
    n_embd = int(header.get(f"{prefix}.embedding_length", 0) or 0)
    n_ff = int(header.get(f"{prefix}.feed_forward_length", 0) or 0) or 4 * n_embd
    n_head = int(header.get(f"{prefix}.attention.head_count", 0) or 0)
    size = tokens * 4 * (2 * n_ff + 6 * n_embd)
    if not flash_attn:
        size += tokens * tokens * n_head * 4
    return size


def _vision_tokens(header: GGUFHeader) -> int:
    """Patches of the image clip warms up with: image_size², or the largest image a dynamic model takes."""
    patch = int(header.get("clip.vision.patch_size", 0) or 0)
    side = int(header.get("clip.vision.image_size", 0) or 0)
    max_pixels = int(header.get("clip.vision.image_max_pixels", 0) or 0)
    if max_pixels:
        side = max(side, math.isqrt(max_pixels))
    return (side // patch) ** 2 if patch else 0


def estimate_projector(header: GGUFHeader, flash_attn: bool = True) -> ProjectorEstimate:
    """Weights and compute buffer of a projector. The compute buffer is an approximation of clip's
    warm-up graph (one image of the largest size, or 30 s of audio), not yet checked against the engine."""
    if not is_projector(header):
        raise GGUFError(
            f"{header.path}: not a multimodal projector (architecture {header.architecture or 'missing'!r})"
        )
    modalities = []
    compute = 0
    if header.get("clip.has_vision_encoder", "clip.vision.image_size" in header.metadata):
        modalities.append("vision")
        compute = max(compute, _encoder_compute(header, "clip.vision", _vision_tokens(header), flash_attn))
    if header.get("clip.has_audio_encoder", False):
        modalities.append("audio")
        # clip warms up with 1500 frames (30 s of audio after the 2x downsampling of Whisper-like encoders)
        compute = max(compute, _encoder_compute(header, "clip.audio", 1500, flash_attn))
    return ProjectorEstimate(header.path, header.tensor_bytes, compute, tuple(modalities))


def read_projector(
    model_path: str | os.PathLike[str], mmproj: str | None, no_mmproj: bool = False
) -> GGUFHeader | None:
    """The header of the projector a model runs with: --mmproj's file, else the one next to the model."""
    if no_mmproj:
        return None
    if mmproj:
        path = mmproj
        beside = os.path.join(os.path.dirname(os.fspath(model_path)), mmproj)
        if not os.path.isabs(mmproj) and not os.path.exists(mmproj) and os.path.exists(beside):
            path = beside  # a name relative to the model's folder
    else:
        found = find_projector(model_path)
        if found is None:
            return None
        path = found
    header = read_gguf_header(path)
    if not is_projector(header):
        raise GGUFError(
            f"{path}: --mmproj is not a multimodal projector (architecture {header.architecture!r})"
        )
    return header
