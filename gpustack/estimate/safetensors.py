"""Safetensors checkpoints from their headers alone: tensor dtypes and shapes, and the bytes engines load."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from gpustack.estimate.hf_config import DTYPE_BYTES, ModelArch, QuantizationConfig

# The dtypes of the safetensors format and their size in bytes (safetensors/src/tensor.rs).
SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 0.5, "F6_E2M3": 0.75,
    "F6_E3M2": 0.75, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8,
    "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library refuses larger headers too
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"


class SafetensorsError(ValueError):
    """A safetensors file or model directory that cannot be read; the message names the file."""


@dataclass
class ModelFiles:
    """What the estimates need from a safetensors model: its config and the tensor table of every shard."""

    config: dict[str, Any]
    tensors: dict[str, tuple[str, tuple[int, ...]]]  # name → (dtype, shape)
    total_bytes: int  # tensor data as stored, all shards
    source: str  # a directory, or "huggingface:<repo>@<revision>"
    files: list[str] = field(default_factory=list)  # the shard names read


def tensor_bytes(dtype: str, shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return int(count * SAFETENSORS_DTYPES[dtype])


def header_length(prefix: bytes, name: str, file_size: int | None = None) -> int:
    """The JSON header length from a file's first 8 bytes (little-endian u64), checked for sanity."""
    if len(prefix) < 8:
        raise SafetensorsError(f"{name}: not a safetensors file (shorter than the 8-byte header length)")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length < 2 or length > MAX_HEADER_BYTES:
        raise SafetensorsError(f"{name}: not a safetensors file (header length {length} is not plausible)")
    if file_size is not None and 8 + length > file_size:
        raise SafetensorsError(
            f"{name}: header is truncated ({8 + length} bytes claimed, file has {file_size})"
        )
    return int(length)


def parse_header(
    raw: bytes, name: str, file_size: int | None = None
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensor table of one safetensors header (the JSON after the 8-byte length)."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"{name}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise SafetensorsError(f"{name}: header is not a JSON object")
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    data_end = 0
    for tensor_name, info in header.items():
        if tensor_name == "__metadata__":
            continue
        try:
            dtype = str(info["dtype"])
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SafetensorsError(f"{name}: tensor {tensor_name!r} has a malformed entry") from exc
        if dtype not in SAFETENSORS_DTYPES:
            raise SafetensorsError(f"{name}: tensor {tensor_name!r} has unknown dtype {dtype!r}")
        if any(d < 0 for d in shape) or end - start != tensor_bytes(dtype, shape):
            raise SafetensorsError(
                f"{name}: tensor {tensor_name!r} spans {end - start} bytes, its dtype and shape need"
                f" {tensor_bytes(dtype, shape)}"
            )
        tensors[tensor_name] = (dtype, shape)
        data_end = max(data_end, end)
    if file_size is not None and 8 + len(raw) + data_end > file_size:
        raise SafetensorsError(
            f"{name}: file is truncated ({file_size} bytes; its header describes {8 + len(raw) + data_end})"
        )
    return tensors


def read_header_from(
    file: BinaryIO, name: str, file_size: int | None = None
) -> dict[str, tuple[str, tuple[int, ...]]]:
    length = header_length(file.read(8), name, file_size)
    raw = file.read(length)
    if len(raw) < length:
        raise SafetensorsError(f"{name}: header is truncated ({len(raw)} of {length} bytes)")
    return parse_header(raw, name, file_size)


def shard_names(index: dict[str, Any], name: str = INDEX_FILE) -> list[str]:
    """The shard files an index's weight_map points at, in a stable order."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise SafetensorsError(f"{name}: no weight_map (is this a model.safetensors.index.json?)")
    return sorted({str(v) for v in weight_map.values()})


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise SafetensorsError(f"{path}: not valid JSON ({exc})") from exc


def read_local_model(directory: str) -> ModelFiles:
    """Read config.json and every shard's header from a local directory; no network, no tensor data."""
    if os.path.isfile(directory) and directory.endswith(".safetensors"):
        directory = os.path.dirname(os.path.abspath(directory))
    if not os.path.isdir(directory):
        raise SafetensorsError(f"{directory}: no such directory")
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise SafetensorsError(f"{directory}: no config.json (a safetensors model directory needs one)")
    config = _read_json(config_path)
    index_path = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index_path):
        names = shard_names(_read_json(index_path), index_path)
    else:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
    if not names:
        raise SafetensorsError(f"{directory}: no *.safetensors files")
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for shard in names:
        path = os.path.join(directory, shard)
        if not os.path.isfile(path):
            raise SafetensorsError(f"{path}: listed in {INDEX_FILE} but missing")
        with open(path, "rb") as f:
            tensors.update(read_header_from(f, path, os.path.getsize(path)))
    total = sum(tensor_bytes(d, s) for d, s in tensors.values())
    return ModelFiles(config=config, tensors=tensors, total_bytes=total, source=directory, files=names)


# --- what the engine loads -------------------------------------------------------------------------------


def model_dtype_bytes(arch: ModelArch, dtype: str = "auto") -> int:
    """Bytes per element of the dtype the engine computes in: --dtype, else config's, float32 downcast."""
    name = arch.torch_dtype if dtype == "auto" else dtype
    size = DTYPE_BYTES.get(name.lower().replace("torch.", ""), 2)
    if size < 2 or (dtype == "auto" and size == 4):
        return 2  # vLLM serves float32 checkpoints in bfloat16/float16 unless --dtype float32
    return size


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layers", "h", "blocks", "layer") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def _is_linear_weight(name: str, shape: tuple[int, ...]) -> bool:
    """A 2-D projection inside a decoder layer: what weight-only quantization applies to."""
    lowered = name.lower()
    return (
        len(shape) == 2
        and lowered.endswith(".weight")
        and _layer_index(name) is not None
        and not any(k in lowered for k in ("norm", "embed", "lm_head", "gate.weight", "router"))
    )


@dataclass(frozen=True)
class LoadedWeights:
    """Bytes and parameters the engine holds once a checkpoint is loaded."""

    bytes: int
    parameters: int
    skipped_bytes: int = 0  # stored but not loaded (tied lm_head, extra MTP layers)


# Qwen2.5-Omni's speech generator: vLLM's thinker-only model never loads these weights.
_SPEECH_OUTPUT_PREFIXES = ("talker.", "token2wav.")


def loaded_weights(
    files: ModelFiles, arch: ModelArch, dtype: str = "auto", quantization: str | None = None
) -> LoadedWeights:
    """Weights as loaded: float tensors cast to the model dtype, packed/fp8 tensors as stored.

    `quantization` is the engine's --quantization: fp8 or bitsandbytes quantize bf16 weights while
    loading; a config.json bitsandbytes/fp8 block over float tensors does the same.
    """
    model_bytes = model_dtype_bytes(arch, dtype)
    on_load: QuantizationConfig | None = None
    if quantization in ("fp8", "fbgemm_fp8"):
        on_load = QuantizationConfig("fp8", 8.0, 0)
    elif quantization == "bitsandbytes":
        on_load = arch.quantization if arch.quantization else QuantizationConfig("bitsandbytes", 4.0, 64)
    elif arch.quantization and arch.quantization.method in ("bitsandbytes", "fp8"):
        on_load = arch.quantization
    packed = arch.quantization
    total = params = skipped = 0
    for name, (stored, shape) in files.tensors.items():
        stored_bytes = tensor_bytes(stored, shape)
        count = 1
        for dim in shape:
            count *= dim
        layer = _layer_index(name) if name.startswith("model.layers.") else None
        if name.startswith(_SPEECH_OUTPUT_PREFIXES):
            skipped += stored_bytes  # vLLM serves an Omni model's thinker only
            continue
        if (layer is not None and arch.num_layers and layer >= arch.num_layers) or (
            arch.tie_word_embeddings and name.endswith("lm_head.weight")
        ):
            skipped += stored_bytes  # vLLM skips MTP/extra layers and a tied lm_head
            continue
        if stored in _FLOAT_DTYPES:
            if on_load is not None and _is_linear_weight(name, shape):
                total += int(count * on_load.bytes_per_param)
            elif packed is not None and "scale" in name:
                total += stored_bytes  # quantization scales keep their stored dtype
            else:
                total += count * model_bytes
            params += count
        else:
            total += stored_bytes
            if (
                packed is not None
                and stored in ("I32", "U32")
                and name.endswith(("qweight", "weight_packed"))
            ):
                params += int(count * 32 // packed.bits)
            elif packed is not None and stored == "U8" and packed.bits == 4:
                params += count * 2
            else:
                params += count
    return LoadedWeights(bytes=total, parameters=params, skipped_bytes=skipped)
