"""Multimodal projector files: finding the one next to a model, and what it costs."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGUFWriter

from gpustack.estimate.gguf import GGUFError, read_gguf_header
from gpustack.estimate.gguf_mmproj import estimate_projector, find_projector, is_projector, read_projector

from .test_gguf import F16, F32, add_tensor, write_model

# A tiny vision projector: 224x224 images in 14x14 patches, one encoder block of width 64.
PATCHES = (224 // 14) ** 2
PROJECTOR_WEIGHTS = 14 * 14 * 3 * 64 * 2 + 4 * 64 * 64 * 2 + 2 * 64 * 128 * 2 + 64 * 4
PROJECTOR_COMPUTE = PATCHES * 4 * (2 * 128 + 6 * 64)  # two n_ff-wide and six n_embd-wide activations


def write_projector(path: Path, *, audio: bool = False) -> Path:
    writer = GGUFWriter(path, "clip")
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_has_audio_encoder(audio)
    writer.add_vision_image_size(224)
    writer.add_vision_patch_size(14)
    writer.add_vision_embedding_length(64)
    writer.add_vision_feed_forward_length(128)
    writer.add_vision_head_count(4)
    writer.add_vision_block_count(1)
    add_tensor(writer, "v.patch_embd.weight", (14, 14, 3, 64), F16)
    for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
        add_tensor(writer, f"v.blk.0.{name}.weight", (64, 64), F16)
    add_tensor(writer, "v.blk.0.ffn_up.weight", (64, 128), F16)
    add_tensor(writer, "v.blk.0.ffn_down.weight", (128, 64), F16)
    add_tensor(writer, "v.post_ln.weight", (64,), F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_projector_weights_and_compute_buffer(tmp_path: Path) -> None:
    header = read_gguf_header(write_projector(tmp_path / "mmproj-model-f16.gguf"))
    assert is_projector(header)
    projector = estimate_projector(header)
    assert projector.modalities == ("vision",)
    assert projector.weights_bytes == PROJECTOR_WEIGHTS
    assert projector.compute_bytes == PROJECTOR_COMPUTE
    # without flash attention the scores of every patch against every other, per head, f32
    no_fa = estimate_projector(header, flash_attn=False)
    assert no_fa.compute_bytes == PROJECTOR_COMPUTE + PATCHES * PATCHES * 4 * 4


def test_a_model_is_not_a_projector(tmp_path: Path) -> None:
    header = read_gguf_header(write_model(tmp_path / "m.gguf"))
    assert not is_projector(header)
    with pytest.raises(GGUFError, match="not a multimodal projector"):
        estimate_projector(header)


def test_the_projector_next_to_a_model_is_found(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model-Q4_0.gguf")
    assert find_projector(model) is None
    projector = write_projector(tmp_path / "mmproj-F16.gguf")
    assert find_projector(model) == str(projector)
    header = read_projector(model, None)
    assert header is not None and header.path == str(projector)
    assert read_projector(model, None, no_mmproj=True) is None


def test_two_projectors_are_ambiguous_until_one_is_named(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model.gguf")
    write_projector(tmp_path / "mmproj-F16.gguf")
    q8 = write_projector(tmp_path / "mmproj-Q8_0.gguf")
    assert find_projector(model) is None
    named = read_projector(model, "mmproj-Q8_0.gguf")  # relative to the model's folder
    assert named is not None and named.path == str(q8)


def test_mmproj_must_be_a_projector(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model.gguf")
    other = write_model(tmp_path / "other.gguf")
    with pytest.raises(GGUFError, match="other.gguf: --mmproj is not a multimodal projector"):
        read_projector(model, str(other))
    with pytest.raises(GGUFError, match="missing.gguf: cannot read the file"):
        read_projector(model, str(tmp_path / "missing.gguf"))
