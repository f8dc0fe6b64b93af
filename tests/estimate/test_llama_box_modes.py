"""Embeddings, reranking and multimodal projectors change what llama.cpp allocates; and the new options."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack.estimate.gguf import read_gguf_header
from gpustack.estimate.llama_box import (
    LlamaBoxOptions,
    MemoryNeed,
    estimate_llama_box,
    parse_llama_box_options,
)

from .test_gguf import write_model
from .test_gguf_mmproj import PROJECTOR_COMPUTE, PROJECTOR_WEIGHTS, write_projector
from .test_llama_box import ACT, CPU_COMPUTE, MASK

PROJECTOR = PROJECTOR_WEIGHTS + PROJECTOR_COMPUTE


# --- options -------------------------------------------------------------------------------------------


def test_device_options_are_read() -> None:
    options = parse_llama_box_options(
        ["--rpc", "10.0.0.2:40064,10.0.0.3:40065", "-ts", "3,1/2", "-sm", "row", "-mg", "1", "-nkvo"]
    )
    assert options.rpc == ["10.0.0.2:40064", "10.0.0.3:40065"]
    assert options.tensor_split == [3.0, 1.0, 2.0]  # llama.cpp splits on "," and "/"
    assert (options.split_mode, options.main_gpu, options.kv_offload) == ("row", 1, False)
    assert LlamaBoxOptions().rpc == [] and LlamaBoxOptions().split_mode == "layer"


def test_projector_and_embedding_options_are_read() -> None:
    options = parse_llama_box_options(["--mmproj", "/m/mmproj.gguf", "--no-mmproj-offload", "--embeddings"])
    assert (options.mmproj, options.mmproj_offload, options.embeddings) == ("/m/mmproj.gguf", False, True)
    rerank = parse_llama_box_options(["--reranking"])
    assert rerank.embeddings and rerank.pooling == "rank" and rerank.outputs_per_batch
    pooled = parse_llama_box_options(["--pooling", "mean"])
    assert not pooled.embeddings and pooled.outputs_per_batch
    assert parse_llama_box_options(["--no-mmproj"]).no_mmproj
    assert not parse_llama_box_options(["--pooling", "none"]).outputs_per_batch


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["--rpc", "10.0.0.2"], "--rpc: expects RPC servers as host:port,host:port,..., got '10.0.0.2'"),
        (["--rpc", "h:99999"], "--rpc: expects RPC servers as host:port,host:port,..., got 'h:99999'"),
        (["--rpc"], "--rpc: expects RPC servers as host:port,host:port,..., got nothing"),
        (["-ts", "3,x"], "-ts: expects proportions per device such as 3,1, got '3,x'"),
        (
            ["--tensor-split", "-1,2"],
            "--tensor-split: expects proportions per device such as 3,1, got '-1,2'",
        ),
        (["-sm", "rows"], "-sm: expects one of none, layer, row, tensor, got 'rows'"),
        (["--pooling", "max"], "--pooling: expects one of none, mean, cls, last, rank, got 'max'"),
        (["--mmproj"], "--mmproj: expects the path of a projector file, got nothing"),
    ],
)
def test_bad_device_and_mode_values_name_the_flag(params: list[str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_llama_box_options(params)
    assert str(caught.value) == message


# --- embeddings and reranking --------------------------------------------------------------------------


def test_embeddings_output_every_token_of_a_ubatch(tmp_path: Path) -> None:
    header = read_gguf_header(write_model(tmp_path / "m.gguf", n_vocab=4096))
    chat = estimate_llama_box(header, LlamaBoxOptions())
    embed = estimate_llama_box(header, parse_llama_box_options(["--embeddings"]))
    # the graph computes the logits of all 512 tokens of a ubatch on the output device ...
    logits_peak = 512 * 4096 * 4 + MASK + 6 * ACT
    assert chat.compute_bytes == CPU_COMPUTE
    assert embed.compute_bytes == logits_peak
    assert embed.full_offload.vram - chat.full_offload.vram == logits_peak - CPU_COMPUTE
    # ... and the host output buffer grows to their logits and embeddings
    assert chat.host_buffers_bytes == 4 * 4096 * 4
    assert embed.host_buffers_bytes == 512 * 4 * (4096 + 64)
    assert embed.growth_bytes == 0 and chat.growth_bytes > 0  # no prompt cache for embeddings


def test_pooling_alone_reserves_outputs_but_keeps_the_small_output_buffer(tmp_path: Path) -> None:
    header = read_gguf_header(write_model(tmp_path / "m.gguf", n_vocab=4096))
    pooled = estimate_llama_box(header, parse_llama_box_options(["--pooling", "mean"]))
    assert pooled.compute_bytes == 512 * 4096 * 4 + MASK + 6 * ACT
    assert pooled.host_buffers_bytes == 4 * 4096 * 4


def test_reranker_is_an_embeddings_server(tmp_path: Path) -> None:
    header = read_gguf_header(write_model(tmp_path / "m.gguf", n_vocab=4096))
    rerank = estimate_llama_box(header, parse_llama_box_options(["--reranking"]))
    embed = estimate_llama_box(header, parse_llama_box_options(["--embeddings"]))
    assert rerank.cpu_only == embed.cpu_only and rerank.embeddings


def test_bert_has_no_kv_cache_and_no_lm_head(tmp_path: Path) -> None:
    path = write_model(tmp_path / "bert.gguf", "bert", n_vocab=4096, tied=True)
    estimate = estimate_llama_box(read_gguf_header(path), parse_llama_box_options(["--embeddings"]))
    assert estimate.kv_cache_bytes == 0
    assert estimate.tied_output_bytes == 0  # no output layer reads the embeddings again
    assert estimate.host_buffers_bytes == 512 * 4 * 64  # embeddings only, no logits
    mask = 512 * 512 * 2  # an encoder attends within its ubatch
    ffn = 512 * 4 * (3 * 128 + 5 * 64) + mask + 512 * 4 * 64
    assert estimate.compute_bytes == max(ffn, 512 * 64 * 4 + mask + 6 * ACT)


# --- multimodal projector ------------------------------------------------------------------------------


@pytest.fixture
def projector(tmp_path: Path) -> Path:
    return write_projector(tmp_path / "mmproj.gguf")


def test_projector_goes_to_the_first_gpu(tmp_path: Path, projector: Path) -> None:
    header = read_gguf_header(write_model(tmp_path / "m.gguf"))
    plain = estimate_llama_box(header, LlamaBoxOptions())
    vision = estimate_llama_box(header, LlamaBoxOptions(), projector=read_gguf_header(projector))
    assert vision.full_offload == MemoryNeed(plain.full_offload.ram, plain.full_offload.vram + PROJECTOR)
    assert vision.cpu_only == MemoryNeed(plain.cpu_only.ram + PROJECTOR, 0)
    assert vision.offload(0) == MemoryNeed(plain.cpu_only.ram, PROJECTOR)  # even with -ngl 0
    split = vision.split([1, 2])
    assert split.vram[0] - plain.split([1, 2]).vram[0] == PROJECTOR
    assert vision.table()[0].vram == PROJECTOR
    assert ", projector 0.8 MiB;" in vision.describe()  # 141,056 B of weights and 655,360 B of compute


def test_projector_skips_rpc_servers_and_honours_no_offload(tmp_path: Path, projector: Path) -> None:
    header = read_gguf_header(write_model(tmp_path / "m.gguf"))
    clip = read_gguf_header(projector)
    rpc = parse_llama_box_options(["--rpc", "a:1,b:2"])
    with_rpc = estimate_llama_box(header, rpc, projector=clip)
    plain = estimate_llama_box(header, rpc)
    # devices: RPC0, RPC1, then the local GPU, which clip takes
    extra = [a - b for a, b in zip(with_rpc.split([1, 1, 1]).vram, plain.split([1, 1, 1]).vram, strict=True)]
    assert extra == [0, 0, PROJECTOR]
    only_rpc = [a - b for a, b in zip(with_rpc.split([1, 2]).vram, plain.split([1, 2]).vram, strict=True)]
    assert only_rpc == [PROJECTOR, 0]  # no local GPU: the first device
    explicit = with_rpc.split([1, 1, 1], projector_device=1).vram
    assert explicit[1] - plain.split([1, 1, 1]).vram[1] == PROJECTOR
    on_cpu = estimate_llama_box(header, parse_llama_box_options(["--no-mmproj-offload"]), projector=clip)
    assert (
        on_cpu.full_offload.ram - estimate_llama_box(header, LlamaBoxOptions()).full_offload.ram == PROJECTOR
    )
