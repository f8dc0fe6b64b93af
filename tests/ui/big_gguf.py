"""A GGUF model too big for any machine here: a real header (Llama shapes at 405B scale, Q4_0) over a sparse
file, so that the estimator reads it like any other model and the file takes no disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

from gpustack.estimate.gguf import read_gguf_header

Q4_0, F32 = GGMLQuantizationType.Q4_0, GGMLQuantizationType.F32


def _info(writer: GGUFWriter, name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType) -> None:
    """A tensor of ggml `shape` (innermost first), described but not written."""
    block, size = GGML_QUANT_SIZES[qtype]
    elements = int(np.prod(shape))
    rows = tuple(reversed(shape))  # numpy order
    writer.add_tensor_info(name, rows, np.dtype(np.float32), elements // block * size, raw_dtype=qtype)


def write_big_gguf(path: Path, n_layer: int = 126, n_embd: int = 16384, n_ff: int = 53248) -> Path:
    n_head, n_head_kv, n_vocab = 128, 8, 128256
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(n_layer)
    writer.add_context_length(131072)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_token_list([f"t{i}" for i in range(n_vocab)])
    kv_dim = n_embd // n_head * n_head_kv
    _info(writer, "token_embd.weight", (n_embd, n_vocab), Q4_0)
    for il in range(n_layer):
        _info(writer, f"blk.{il}.attn_norm.weight", (n_embd,), F32)
        _info(writer, f"blk.{il}.attn_q.weight", (n_embd, n_embd), Q4_0)
        _info(writer, f"blk.{il}.attn_k.weight", (n_embd, kv_dim), Q4_0)
        _info(writer, f"blk.{il}.attn_v.weight", (n_embd, kv_dim), Q4_0)
        _info(writer, f"blk.{il}.attn_output.weight", (n_embd, n_embd), Q4_0)
        _info(writer, f"blk.{il}.ffn_norm.weight", (n_embd,), F32)
        _info(writer, f"blk.{il}.ffn_gate.weight", (n_embd, n_ff), Q4_0)
        _info(writer, f"blk.{il}.ffn_up.weight", (n_embd, n_ff), Q4_0)
        _info(writer, f"blk.{il}.ffn_down.weight", (n_ff, n_embd), Q4_0)
    _info(writer, "output_norm.weight", (n_embd,), F32)
    _info(writer, "output.weight", (n_embd, n_vocab), Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with open(path, "r+b") as file:
        file.truncate(read_gguf_header(str(path)).expected_size)  # sparse: the data is never read
    return path
