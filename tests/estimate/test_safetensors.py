"""Safetensors headers → tensor table and the bytes an engine loads."""

from __future__ import annotations

import json
import os
import struct

import pytest

from gpustack.estimate.hf_config import parse_config
from gpustack.estimate.safetensors import SafetensorsError, loaded_weights, read_local_model
from tests.estimate.fixtures.safetensors_models import (
    llama_config,
    llama_tensors,
    tiny_llama,
    write_model,
    write_safetensors,
)

TINY_PARAMS = (
    2_742_528  # 4 × (q 65536 + k 16384 + v 16384 + o 65536 + 3 × 131072 + norms 512) + 2 × 256000 + 256
)


def test_single_file_model(tmp_path):
    tiny_llama(str(tmp_path))
    model = read_local_model(str(tmp_path))
    assert model.total_bytes == TINY_PARAMS * 2
    assert model.tensors["model.layers.0.self_attn.k_proj.weight"] == ("BF16", (64, 256))
    weights = loaded_weights(model, parse_config(model.config))
    assert (weights.bytes, weights.parameters) == (TINY_PARAMS * 2, TINY_PARAMS)


def test_sharded_model_reads_every_shard_of_the_index(tmp_path):
    files = tiny_llama(str(tmp_path), shards=3)
    with open(tmp_path / "consolidated.safetensors", "wb") as f:  # not in the index: ignored
        f.write(b"junk")
    model = read_local_model(str(tmp_path))
    assert model.files == files and len(files) == 3
    assert model.total_bytes == TINY_PARAMS * 2


def test_data_is_never_read(tmp_path):
    # Llama-3-8B shapes in sparse files: 16 GB of tensors that take no disk and are never read.
    config = llama_config(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
    )
    tensors = llama_tensors(32, 4096, 32, 8, 128, 14336, 128256)
    write_model(str(tmp_path), config, tensors, shards=4)
    model = read_local_model(str(tmp_path))
    weights = loaded_weights(model, parse_config(model.config))
    assert weights.parameters == 8_030_261_248  # Llama-3-8B's published count
    assert weights.bytes == 16_060_522_496


def test_float32_checkpoint_is_served_in_half_precision(tmp_path):
    config = llama_config(torch_dtype="float32")
    tensors = llama_tensors(4, 256, 8, 2, 32, 512, 1000, dtype="F32")
    write_model(str(tmp_path), config, tensors)
    model = read_local_model(str(tmp_path))
    arch = parse_config(model.config)
    assert model.total_bytes == TINY_PARAMS * 4
    assert loaded_weights(model, arch).bytes == TINY_PARAMS * 2
    assert loaded_weights(model, arch, dtype="float32").bytes == TINY_PARAMS * 4


def test_gptq_weights_count_as_stored(tmp_path):
    hidden, inter = 256, 512
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {"model.embed_tokens.weight": ("F16", (1000, hidden))}
    for proj, (n_in, n_out) in {"q_proj": (hidden, hidden), "down_proj": (inter, hidden)}.items():
        p = f"model.layers.0.{proj}."
        tensors[p + "qweight"] = ("I32", (n_in // 8, n_out))
        tensors[p + "qzeros"] = ("I32", (n_in // 128, n_out // 8))
        tensors[p + "scales"] = ("F16", (n_in // 128, n_out))
        tensors[p + "g_idx"] = ("I32", (n_in,))
    config = llama_config(
        num_hidden_layers=1,
        torch_dtype="float16",
        quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 128},
    )
    write_model(str(tmp_path), config, tensors)
    model = read_local_model(str(tmp_path))
    weights = loaded_weights(model, parse_config(model.config))
    # embeddings 512000; q_proj: qweight 32768 + qzeros 256 + scales 1024 + g_idx 1024;
    # down_proj: qweight 65536 + qzeros 512 + scales 2048 + g_idx 2048
    assert weights.bytes == model.total_bytes == 617_216
    # packed 4-bit weights count 8 per int32; zeros, scales and g_idx count as stored elements
    assert weights.parameters == 256000 + 256 * 256 + 512 * 256 + (64 + 128) + (512 + 1024) + (256 + 512)


def test_bitsandbytes_and_fp8_quantize_float_weights_on_load(tmp_path):
    config = llama_config(quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True})
    tensors = llama_tensors(4, 256, 8, 2, 32, 512, 1000)
    write_model(str(tmp_path), config, tensors)
    model = read_local_model(str(tmp_path))
    linear = 4 * (557_568 - 512)
    other = TINY_PARAMS - linear
    assert loaded_weights(model, parse_config(model.config)).bytes == int(linear * 0.5625) + other * 2
    plain = parse_config(llama_config())
    assert loaded_weights(model, plain, quantization="fp8").bytes == linear + other * 2


def test_tied_lm_head_and_mtp_layers_are_not_loaded(tmp_path):
    config = llama_config(num_hidden_layers=1, tie_word_embeddings=True)
    tensors = {
        "model.embed_tokens.weight": ("BF16", (1000, 256)),
        "model.layers.0.mlp.up_proj.weight": ("BF16", (512, 256)),
        "model.layers.1.mlp.up_proj.weight": ("BF16", (512, 256)),  # a DeepSeek-style MTP layer
        "lm_head.weight": ("BF16", (1000, 256)),
    }
    write_model(str(tmp_path), config, tensors)
    model = read_local_model(str(tmp_path))
    weights = loaded_weights(model, parse_config(model.config))
    assert weights.bytes == (256000 + 131072) * 2
    assert weights.skipped_bytes == (131072 + 256000) * 2


def test_not_a_safetensors_file_names_the_file(tmp_path):
    tiny_llama(str(tmp_path))
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(SafetensorsError, match="model.safetensors: not a safetensors file"):
        read_local_model(str(tmp_path))


def test_truncated_header_and_data(tmp_path):
    tiny_llama(str(tmp_path))
    path = tmp_path / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(raw[:200])
    with pytest.raises(SafetensorsError, match="header is truncated"):
        read_local_model(str(tmp_path))
    (length,) = struct.unpack("<Q", raw[:8])
    path.write_bytes(raw[: 8 + length + 10])
    with pytest.raises(SafetensorsError, match="file is truncated"):
        read_local_model(str(tmp_path))


def test_inconsistent_tensor_entry(tmp_path):
    header = json.dumps({"w": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 8]}}).encode()
    os.makedirs(tmp_path, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(llama_config()))
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(SafetensorsError, match="'w' spans 8 bytes, its dtype and shape need 32"):
        read_local_model(str(tmp_path))


def test_missing_config_or_weights(tmp_path):
    with pytest.raises(SafetensorsError, match="no such directory"):
        read_local_model(str(tmp_path / "nope"))
    write_safetensors(str(tmp_path / "model.safetensors"), {"w": ("BF16", (2,))})
    with pytest.raises(SafetensorsError, match="no config.json"):
        read_local_model(str(tmp_path))
