"""The GGUF header reader against files written by the reference `gguf` package and hand-made broken ones."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFEndian, GGUFReader, GGUFWriter

from gpustack.estimate.gguf import (
    GGUFArray,
    GGUFError,
    GGUFHeader,
    read_gguf_header,
    read_gguf_shards,
)
from gpustack.estimate.gguf_types import GGML_TYPES

Q4_0, Q8_0, F16, F32 = (
    GGMLQuantizationType.Q4_0,
    GGMLQuantizationType.Q8_0,
    GGMLQuantizationType.F16,
    GGMLQuantizationType.F32,
)


def add_tensor(writer: GGUFWriter, name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType) -> None:
    """Add a zero tensor of ggml `shape` (innermost first) stored as `qtype`."""
    block, size = GGML_QUANT_SIZES[qtype]
    rows = shape[1:][::-1]
    if qtype == F32:
        writer.add_tensor(name, np.zeros((*rows, shape[0]), dtype=np.float32))
    elif qtype == F16:
        writer.add_tensor(name, np.zeros((*rows, shape[0]), dtype=np.float16))
    else:
        writer.add_tensor(name, np.zeros((*rows, shape[0] // block * size), dtype=np.uint8), raw_dtype=qtype)


def write_model(
    path: Path,
    arch: str = "llama",
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int | list[int] = 2,
    n_ff: int = 128,
    n_vocab: int = 256,
    tied: bool = False,
    metadata: Callable[[GGUFWriter], None] | None = None,
    layer_tensors: Callable[[GGUFWriter, int], None] | None = None,
    **writer_args: Any,
) -> Path:
    """A tiny model: F16 embeddings, Q4_0 attention, Q8_0 feed-forward, F32 norms and head."""
    writer = GGUFWriter(path, arch, **writer_args)
    writer.add_block_count(n_layer)
    writer.add_context_length(4096)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_token_list([f"t{i}" for i in range(n_vocab)])
    if metadata:
        metadata(writer)
    head_dim = n_embd // n_head
    kv_dim = head_dim * (n_head_kv if isinstance(n_head_kv, int) else max(n_head_kv))
    add_tensor(writer, "token_embd.weight", (n_embd, n_vocab), F16)
    for il in range(n_layer):
        add_tensor(writer, f"blk.{il}.attn_norm.weight", (n_embd,), F32)
        add_tensor(writer, f"blk.{il}.attn_q.weight", (n_embd, n_embd), Q4_0)
        add_tensor(writer, f"blk.{il}.attn_k.weight", (n_embd, kv_dim), Q4_0)
        add_tensor(writer, f"blk.{il}.attn_v.weight", (n_embd, kv_dim), Q4_0)
        add_tensor(writer, f"blk.{il}.attn_output.weight", (n_embd, n_embd), Q4_0)
        add_tensor(writer, f"blk.{il}.ffn_norm.weight", (n_embd,), F32)
        add_tensor(writer, f"blk.{il}.ffn_gate.weight", (n_embd, n_ff), Q8_0)
        add_tensor(writer, f"blk.{il}.ffn_up.weight", (n_embd, n_ff), Q8_0)
        add_tensor(writer, f"blk.{il}.ffn_down.weight", (n_ff, n_embd), Q8_0)
        if layer_tensors:
            layer_tensors(writer, il)
    add_tensor(writer, "output_norm.weight", (n_embd,), F32)
    if not tied:
        add_tensor(writer, "output.weight", (n_embd, n_vocab), F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def raw_gguf(*parts: bytes, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<I", version) + b"".join(parts)


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def test_reads_what_the_reference_reader_reads(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", metadata=lambda w: w.add_custom_alignment(64))
    header = read_gguf_header(path)
    reference = GGUFReader(path)
    assert header.version == 3
    assert header.data_offset == reference.data_offset
    assert header.data_offset % 64 == 0
    assert header.file_size == path.stat().st_size == header.expected_size
    assert len(header.tensors) == len(reference.tensors)
    for ours, theirs in zip(header.tensors, reference.tensors, strict=True):
        assert ours.name == theirs.name
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.n_bytes == theirs.n_bytes
        assert header.data_offset + ours.offset == theirs.data_offset


def test_exposes_metadata_and_architecture_relative_values(tmp_path: Path) -> None:
    header = read_gguf_header(write_model(tmp_path / "m.gguf"))
    assert header.architecture == "llama"
    assert header.arch_value("block_count") == 2
    assert header.arch_value("attention.head_count_kv") == 2
    assert header.get("llama.embedding_length") == 64
    assert header.get("no.such.key", "fallback") == "fallback"
    assert header.get("tokenizer.ggml.tokens")[:2] == ["t0", "t1"]


def test_computes_tensor_bytes_from_block_sizes(tmp_path: Path) -> None:
    header = read_gguf_header(write_model(tmp_path / "m.gguf"))
    by_name = {t.name: t for t in header.tensors}
    assert by_name["blk.0.attn_q.weight"].n_bytes == 64 * 64 // 32 * 18  # Q4_0: 18 bytes per 32
    assert by_name["blk.0.ffn_up.weight"].n_bytes == 64 * 128 // 32 * 34  # Q8_0: 34 bytes per 32
    assert by_name["token_embd.weight"].n_bytes == 64 * 256 * 2
    assert by_name["token_embd.weight"].shape == (64, 256)


def test_type_table_matches_the_reference_package() -> None:
    for qtype, (block, size) in GGML_QUANT_SIZES.items():
        ours = GGML_TYPES[int(qtype)]
        assert (ours.block_size, ours.type_size) == (block, size), qtype.name


def test_long_arrays_become_placeholders_and_short_ones_are_kept(tmp_path: Path) -> None:
    def metadata(w: GGUFWriter) -> None:
        w.add_array("test.scores", [0.5] * 3000)
        w.add_array("test.small", [1, 2, 3])
        w.add_array("test.nested", [[1, 2], [3]])

    header = read_gguf_header(write_model(tmp_path / "m.gguf", n_vocab=5000, metadata=metadata))
    tokens = header.get("tokenizer.ggml.tokens")
    assert isinstance(tokens, GGUFArray) and len(tokens) == 5000 and tokens.element_type == 8
    assert isinstance(header.get("test.scores"), GGUFArray) and len(header.get("test.scores")) == 3000
    assert header.get("test.small") == [1, 2, 3]
    assert header.get("test.nested") == [[1, 2], [3]]
    assert header.tensors[0].name == "token_embd.weight"  # reading went on correctly after the arrays


def test_reads_gguf_v2_and_big_endian_files(tmp_path: Path) -> None:
    big = read_gguf_header(write_model(tmp_path / "be.gguf", endianess=GGUFEndian.BIG))
    assert big.arch_value("block_count") == 2 and big.get("tokenizer.ggml.tokens")[3] == "t3"
    assert big.data_offset == GGUFReader(tmp_path / "be.gguf").data_offset

    v2 = tmp_path / "v2.gguf"
    v2.write_bytes(
        raw_gguf(
            struct.pack("<QQ", 0, 1),
            gguf_string("general.architecture"),
            struct.pack("<I", 8),
            gguf_string("llama"),
            version=2,
        )
    )
    assert read_gguf_header(v2).version == 2
    assert read_gguf_header(v2).architecture == "llama"


def test_finds_every_shard_of_a_split_model(tmp_path: Path) -> None:
    write_model(tmp_path / "model.gguf", split_max_tensors=10)
    first = tmp_path / "model-00001-of-00003.gguf"
    shards = read_gguf_shards(first)
    assert [Path(h.path).name for h in shards] == [f"model-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert sum(len(h.tensors) for h in shards) == 1 + 2 * 9 + 2
    assert shards[0].architecture == "llama"
    from_second = read_gguf_shards(tmp_path / "model-00002-of-00003.gguf")
    assert Path(from_second[0].path).name == first.name


def test_unsplit_model_is_its_own_only_shard(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf")
    assert [h.path for h in read_gguf_shards(path)] == [str(path)]


def test_missing_shard_is_named(tmp_path: Path) -> None:
    write_model(tmp_path / "model.gguf", split_max_tensors=10)
    (tmp_path / "model-00002-of-00003.gguf").unlink()
    with pytest.raises(GGUFError, match=r"shard 2 of 3 is missing: .*model-00002-of-00003\.gguf"):
        read_gguf_shards(tmp_path / "model-00001-of-00003.gguf")


def test_split_model_with_a_renamed_first_shard_says_why_it_cannot_continue(tmp_path: Path) -> None:
    write_model(tmp_path / "model.gguf", split_max_tensors=10)
    (tmp_path / "model-00001-of-00003.gguf").rename(tmp_path / "renamed.gguf")
    with pytest.raises(GGUFError, match="split into 3 files"):
        read_gguf_shards(tmp_path / "renamed.gguf")


def test_truncated_header_names_the_file_and_the_byte(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf")
    data = path.read_bytes()
    for cut in (6, 30, 200, read_gguf_header(path).data_offset - 40):
        truncated = tmp_path / f"cut{cut}.gguf"
        truncated.write_bytes(data[:cut])
        with pytest.raises(GGUFError, match=f"header is truncated at byte {cut}") as caught:
            read_gguf_header(truncated)
        assert str(caught.value).startswith(f"{truncated}: ")


def test_file_that_is_not_gguf_is_refused_with_its_magic(tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(GGUFError, match=r"model\.zip is not a GGUF file \(magic b'PK\\x03\\x04'\)"):
        read_gguf_header(path)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GGUFError, match="is not a GGUF file"):
        read_gguf_header(empty)


def test_missing_file_is_a_gguf_error(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="nothere.gguf: cannot read the file"):
        read_gguf_header(tmp_path / "nothere.gguf")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (struct.pack("<QQQ", 0, 1, 1 << 60), "claims 1152921504606846976 items"),  # key length
        (struct.pack("<QQ", 1 << 40, 0), "tensor count at byte 8 claims"),
        (struct.pack("<QQ", 0, 1) + gguf_string("k") + struct.pack("<IIQ", 9, 8, 1 << 50), "metadata 'k'"),
        (struct.pack("<QQ", 0, 1) + gguf_string("k") + struct.pack("<I", 99), "unknown value type 99"),
        (struct.pack("<QQ", 0, 1) + gguf_string("k") + struct.pack("<II", 9, 42), "unknown value type 42"),
        (struct.pack("<QQ", 1, 0) + gguf_string("t") + struct.pack("<I", 1000), "claims 1000 dimensions"),
    ],
)
def test_absurd_lengths_and_types_are_refused(tmp_path: Path, body: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(raw_gguf(body) + bytes(64))
    with pytest.raises(GGUFError, match=message) as caught:
        read_gguf_header(path)
    assert str(path) in str(caught.value)


def test_unsupported_version_and_bad_alignment_are_refused(tmp_path: Path) -> None:
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(raw_gguf(bytes(32), version=1))
    with pytest.raises(GGUFError, match="GGUF version 1 is not supported"):
        read_gguf_header(v1)
    aligned = tmp_path / "align.gguf"
    aligned.write_bytes(
        raw_gguf(struct.pack("<QQ", 0, 1), gguf_string("general.alignment"), struct.pack("<II", 4, 48))
    )
    with pytest.raises(GGUFError, match="general.alignment must be a power of two, got 48"):
        read_gguf_header(aligned)


def test_deeply_nested_arrays_are_refused_not_recursed(tmp_path: Path) -> None:
    nest = b"".join(struct.pack("<IQ", 9, 1) for _ in range(10_000)) + struct.pack("<IQ", 4, 0)
    path = tmp_path / "nest.gguf"
    path.write_bytes(raw_gguf(struct.pack("<QQ", 0, 1), gguf_string("k"), struct.pack("<I", 9), nest))
    with pytest.raises(GGUFError, match="nests arrays more than"):
        read_gguf_header(path)


def test_header_is_a_plain_value(tmp_path: Path) -> None:
    header = read_gguf_header(write_model(tmp_path / "m.gguf"))
    assert isinstance(header, GGUFHeader)
    assert header.tensor_bytes == sum(t.n_bytes for t in header.tensors)
    assert header.alignment == 32


def test_tensor_of_an_unknown_type_is_sized_by_the_gap_to_the_next(tmp_path: Path) -> None:
    def info(name: str, dims: tuple[int, ...], ggml_type: int, offset: int) -> bytes:
        return gguf_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ggml_type, offset)

    header_bytes = raw_gguf(struct.pack("<QQ", 2, 0), info("new", (64,), 99, 0), info("old", (8,), 0, 96))
    padding = bytes(-len(header_bytes) % 32)
    path = tmp_path / "future.gguf"
    path.write_bytes(header_bytes + padding + bytes(96 + 32))
    header = read_gguf_header(path)
    assert [(t.name, t.n_bytes) for t in header.tensors] == [("new", 96), ("old", 32)]


def test_file_type_names_match_the_reference_package() -> None:
    from gguf import LlamaFileType

    from gpustack.estimate.gguf_types import LLAMA_FILE_TYPES

    for file_type in LlamaFileType:
        if file_type != LlamaFileType.GUESSED:
            assert LLAMA_FILE_TYPES[int(file_type)] == file_type.name.removeprefix("MOSTLY_").removeprefix(
                "ALL_"
            )
