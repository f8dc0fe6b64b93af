"""llama-box option parsing and memory estimates, checked against sizes worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGUFWriter

from gpustack.estimate.gguf import read_gguf_header, read_gguf_shards
from gpustack.estimate.llama_box import (
    LlamaBoxOptions,
    MemoryNeed,
    estimate_llama_box,
    parse_llama_box_options,
)

from .test_gguf import F32, add_tensor, write_model

MiB = 1 << 20

# The tiny llama of test_gguf.write_model, per layer: Q4_0 q/o 64x64 (2304 B each), Q4_0 k/v 64x32
# (1152 B each), Q8_0 gate/up/down 64x128 (8704 B each), two F32 norms (256 B each).
LAYER_BYTES = 2 * 2304 + 2 * 1152 + 3 * 8704 + 2 * 256
EMBD_BYTES = 64 * 256 * 2  # F16 token_embd
OUTPUT_BYTES = 64 * 256 * 4 + 256  # F32 output.weight and output_norm

# Its buffers with GPUStack's defaults (ctx 8192 in 4 slots of 2048 cells, ubatch 512, flash attention):
ACT = 512 * 4 * 64  # one f32 hidden state of a ubatch
MASK = 512 * 2048 * 2  # the f16 KQ mask of a ubatch over one slot's cells
CPU_COMPUTE = 512 * 4 * (3 * 128 + 5 * 64) + MASK + 512 * 4 * 64  # feed-forward peak, mask, Q
OUTPUT_PEAK = 4 * 256 * 4 + MASK + 6 * ACT  # one token's logits per slot
HOST_COMPUTE = 5 * ACT + MASK  # the CPU's buffer when the layers run on a GPU
GPU_FIRST_COMPUTE = CPU_COMPUTE - ACT  # a GPU running the first layer
GPU_COMPUTE = CPU_COMPUTE - 3 * ACT  # a GPU whose layers follow the CPU's or another GPU's
KV_LAYER = 4 * 2048 * 2 * 16 * 2 * 2  # 4 streams x 2048 cells x 2 KV heads of 16 x (K, V) x f16
RUNTIME = 40 * MiB + 96 * 256
OUTPUT_BUFFER = 4 * 256 * 4  # one token's logits per slot


# --- options -------------------------------------------------------------------------------------


def test_defaults_are_gpustacks_llama_box_defaults() -> None:
    options = parse_llama_box_options([])
    assert options == LlamaBoxOptions()
    sizes = (options.ctx_size, options.parallel, options.batch_size, options.ubatch_size)
    assert sizes == (8192, 4, 2048, 512)
    assert options.gpu_layers is None and options.flash_attn is None and not options.no_mmap


@pytest.mark.parametrize(
    "params",
    [["--ctx-size=2048"], ["--ctx-size 2048"], ["--ctx-size", "2048"], ["-c", "2048"], ["-c=2048"]],
)
def test_ctx_size_is_read_in_every_spelling(params: list[str]) -> None:
    assert parse_llama_box_options(params).ctx_size == 2048


def test_every_memory_flag_is_read() -> None:
    options = parse_llama_box_options(
        [
            "-np 2",
            "-b",
            "1024",
            "--ubatch-size=256",
            "-ctk",
            "q8_0",
            "--cache-type-v=Q4_0",
            "--no-mmap",
            "-ngl",
            "10",
            "--swa-full",
            "--cache-ram",
            "0",
        ]
    )
    assert (options.parallel, options.batch_size, options.ubatch_size) == (2, 1024, 256)
    assert (options.cache_type_k, options.cache_type_v) == ("q8_0", "q4_0")
    assert options.no_mmap and options.swa_full and options.gpu_layers == 10 and options.cache_ram_mib == 0


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (["-fa"], True),
        (["--flash-attn", "on"], True),
        (["-fa", "off"], False),
        (["-fa=auto"], None),
        (["--flash-attn", "-c", "1024"], True),
        ([], None),
    ],
)
def test_flash_attn_takes_an_optional_value(params: list[str], expected: bool | None) -> None:
    assert parse_llama_box_options(params).flash_attn is expected


def test_gpu_layers_all_or_auto_mean_every_layer() -> None:
    assert parse_llama_box_options(["--n-gpu-layers", "all"]).gpu_layers is None
    assert parse_llama_box_options(["--gpu-layers=auto"]).gpu_layers is None
    assert parse_llama_box_options(["-ngl", "0"]).gpu_layers == 0


def test_parallel_auto_means_four_slots_sharing_one_cache() -> None:
    options = parse_llama_box_options(["-np", "-1"])
    assert options.parallel == 4 and options.kv_unified


def test_unknown_flags_and_their_values_are_ignored() -> None:
    params = ["--jinja", "--alias", "my-model", "--chat-template 'a b'", "-c", "1024"]
    options = parse_llama_box_options(params)
    assert options.ctx_size == 1024


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            ["--ctx-size", "abc"],
            "--ctx-size: expects a positive integer (or 0 for the model's own context length), got 'abc'",
        ),
        (["-c"], "-c: expects a positive integer (or 0 for the model's own context length), got nothing"),
        (["-np", "0"], "-np: expects a positive integer (or -1 for auto), got '0'"),
        (["--ubatch-size=-5"], "--ubatch-size: expects a positive integer, got '-5'"),
        (
            ["-ctk", "q3"],
            "-ctk: expects one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1, got 'q3'",
        ),
        (["-ngl", "many"], "-ngl: expects a positive integer (or 'auto' / 'all'), got 'many'"),
    ],
)
def test_bad_values_name_the_flag(params: list[str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_llama_box_options(params)
    assert str(caught.value) == message


def test_kv_bytes_per_element_follow_the_cache_type() -> None:
    options = LlamaBoxOptions(cache_type_k="q8_0", cache_type_v="q4_0")
    assert options.kv_bytes_per_element("k") == 34 / 32
    assert options.kv_bytes_per_element("v") == 18 / 32
    assert LlamaBoxOptions().kv_bytes_per_element("k") == 2


# --- llama with grouped-query attention ---------------------------------------------------------------


@pytest.fixture
def llama(tmp_path: Path) -> Path:
    return write_model(tmp_path / "llama.gguf")  # 2 layers, 4 heads of 16, 2 KV heads


def test_llama_weights_and_layers(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    assert estimate.architecture == "llama"
    assert estimate.total_layers == 3
    assert estimate.weights_bytes == EMBD_BYTES + 2 * LAYER_BYTES + OUTPUT_BYTES


@pytest.mark.parametrize(
    ("ctx", "parallel", "cells"),
    [(8192, 4, 8192), (8192, 1, 8192), (2048, 4, 2048), (1000, 1, 1024), (2048, 3, 2304)],
)
def test_llama_kv_cache_holds_ctx_size_cells_shared_by_the_slots(
    llama: Path, ctx: int, parallel: int, cells: int
) -> None:
    # llama.cpp pads the context to 256 and each slot's share to 256: 2048 / 3 -> 768 per slot.
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions(ctx_size=ctx, parallel=parallel))
    per_cell = 2 * (2 * 16 + 2 * 16) * 2  # layers x (K + V of 2 heads of 16) x f16
    assert estimate.kv_cache_bytes == cells * per_cell
    assert estimate.ctx_size == cells


def test_quantized_kv_cache_is_smaller(llama: Path) -> None:
    header = read_gguf_header(llama)
    estimate = estimate_llama_box(header, LlamaBoxOptions(cache_type_k="q8_0", cache_type_v="q8_0"))
    assert estimate.kv_cache_bytes == 8192 * 2 * 64 * 34 // 32


def test_ctx_size_zero_uses_the_models_training_context(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions(ctx_size=0, parallel=1))
    assert estimate.ctx_size == 4096


def test_cpu_only_keeps_everything_in_ram(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    ram = estimate.cpu_only.ram
    assert estimate.cpu_only.vram == 0
    assert ram == (
        estimate.weights_bytes
        + estimate.kv_cache_bytes
        + estimate.compute_bytes
        + estimate.runtime_bytes
        + estimate.host_buffers_bytes
    )


def test_buffers_match_the_hand_computed_sizes(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    assert estimate.kv_cache_bytes == 2 * KV_LAYER
    assert estimate.compute_bytes == CPU_COMPUTE
    assert estimate.host_compute_bytes == HOST_COMPUTE
    assert estimate.runtime_bytes == RUNTIME
    assert estimate.host_buffers_bytes == OUTPUT_BUFFER
    weights = EMBD_BYTES + 2 * LAYER_BYTES + OUTPUT_BYTES
    assert estimate.cpu_only == MemoryNeed(
        ram=RUNTIME + OUTPUT_BUFFER + weights + 2 * KV_LAYER + CPU_COMPUTE, vram=0
    )


def test_full_offload_leaves_only_the_input_layer_and_host_buffers_in_ram(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    assert estimate.full_offload.vram == 2 * LAYER_BYTES + OUTPUT_BYTES + 2 * KV_LAYER + GPU_FIRST_COMPUTE
    assert estimate.full_offload.ram == EMBD_BYTES + RUNTIME + OUTPUT_BUFFER + HOST_COMPUTE


def test_partial_offload_moves_the_output_layer_first(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    assert estimate.offload(0) == MemoryNeed(ram=estimate.cpu_only.ram, vram=0)
    # the CPU still runs both layers with its full compute buffer; the GPU runs the output layer
    assert estimate.offload(1) == MemoryNeed(
        ram=estimate.cpu_only.ram - OUTPUT_BYTES, vram=OUTPUT_BYTES + GPU_COMPUTE
    )
    assert estimate.offload(2).vram == OUTPUT_BYTES + LAYER_BYTES + KV_LAYER + GPU_COMPUTE
    assert estimate.offload(99) == estimate.full_offload


def test_flash_attention_off_pays_for_the_attention_scores(llama: Path) -> None:
    header = read_gguf_header(llama)
    on = estimate_llama_box(header, LlamaBoxOptions(ctx_size=32768, parallel=1, flash_attn=True))
    off = estimate_llama_box(header, LlamaBoxOptions(ctx_size=32768, parallel=1, flash_attn=False))
    # without it: 32768 cells x 512 tokens x (4 heads + the mask) x f32
    assert off.compute_bytes - on.compute_bytes >= 32768 * 512 * 4 * 4
    auto = estimate_llama_box(header, LlamaBoxOptions(ctx_size=32768, parallel=1))
    assert auto.compute_bytes == on.compute_bytes  # llama.cpp's auto turns it on


def test_describe_reads_as_one_line(llama: Path) -> None:
    text = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions()).describe()
    assert text.startswith("weights 0.2 MiB, KV cache 2.0 MiB (ctx 8192, parallel 4), compute ")
    assert "\n" not in text


# --- gemma3: sliding-window attention ------------------------------------------------------------------


def _gemma3(path: Path) -> Path:
    def metadata(w: GGUFWriter) -> None:
        w.add_sliding_window(128)
        w.add_key_length(32)
        w.add_value_length(32)

    return write_model(path, "gemma3", n_layer=6, n_head=4, n_head_kv=1, tied=True, metadata=metadata)


def test_gemma3_sliding_window_layers_keep_only_the_window(tmp_path: Path) -> None:
    header = read_gguf_header(_gemma3(tmp_path / "gemma3.gguf"))
    estimate = estimate_llama_box(header, LlamaBoxOptions(ctx_size=8192, parallel=4))
    per_cell = (32 + 32) * 2  # one KV head of 32, f16
    full = 8192 * per_cell  # layer 5 (every sixth layer attends to everything)
    window = 4 * 768 * per_cell  # 4 slots x pad256(128 + 512 ubatch) cells
    assert estimate.kv_cache_bytes == full + 5 * window


def test_gemma3_with_swa_full_or_a_unified_cache(tmp_path: Path) -> None:
    header = read_gguf_header(_gemma3(tmp_path / "gemma3.gguf"))
    per_cell = (32 + 32) * 2
    swa_full = estimate_llama_box(header, LlamaBoxOptions(swa_full=True))
    assert swa_full.kv_cache_bytes == 6 * 8192 * per_cell
    unified = estimate_llama_box(header, parse_llama_box_options(["-np", "-1"]))
    assert unified.kv_cache_bytes == 8192 * per_cell + 5 * 1024 * per_cell  # pad256(128 x 4 + 512)


def test_tied_output_needs_a_copy_of_the_embeddings_on_the_gpu(tmp_path: Path) -> None:
    header = read_gguf_header(_gemma3(tmp_path / "gemma3.gguf"))
    estimate = estimate_llama_box(header, LlamaBoxOptions())
    layers = 6 * LAYER_BYTES - 6 * (2 * 1152) + 6 * (2 * 576)  # k/v are 64x16 with one KV head
    assert estimate.weights_bytes == EMBD_BYTES + layers + 256
    assert estimate.full_offload.vram == (
        layers + 256 + EMBD_BYTES + estimate.kv_cache_bytes + estimate.compute_bytes - ACT
    )


def test_sliding_window_checkpoints_are_counted_as_growth(tmp_path: Path) -> None:
    header = read_gguf_header(_gemma3(tmp_path / "gemma3.gguf"))
    checkpoint = 128 * 5 * (32 + 32) * 2  # the window of the 5 sliding-window layers, f16
    estimate = estimate_llama_box(header, LlamaBoxOptions(cache_ram_mib=0))
    # each of the 4 slots may keep 32 checkpoints along its prompts; none exists before a long prompt
    assert estimate.host_buffers_bytes == 4 * 256 * 4
    assert estimate.growth_bytes == 4 * 32 * checkpoint
    default = estimate_llama_box(header, LlamaBoxOptions())
    assert default.growth_bytes == estimate.growth_bytes + 8192 * MiB  # --cache-ram's default
    expected = "; the prompt cache and checkpoints may add up to 8202.0 MiB of RAM while serving"
    assert expected in default.describe()
    options = parse_llama_box_options(["--ctx-checkpoints", "0", "-cram", "0"])
    assert estimate_llama_box(header, options).growth_bytes == 0


# --- qwen2 (per-layer KV heads) and mamba (recurrent state) -------------------------------------------


def test_per_layer_kv_head_counts_are_honoured(tmp_path: Path) -> None:
    path = write_model(tmp_path / "qwen2.gguf", "qwen2", n_layer=3, n_head_kv=[2, 1, 4])
    estimate = estimate_llama_box(read_gguf_header(path), LlamaBoxOptions(ctx_size=4096, parallel=1))
    assert estimate.kv_cache_bytes == 4096 * (2 + 1 + 4) * (16 + 16) * 2


def test_mamba_keeps_a_state_per_slot_instead_of_a_kv_cache(tmp_path: Path) -> None:
    def metadata(w: GGUFWriter) -> None:
        w.add_ssm_conv_kernel(4)
        w.add_ssm_inner_size(128)
        w.add_ssm_state_size(16)
        w.add_ssm_time_step_rank(4)

    def ssm(w: GGUFWriter, il: int) -> None:
        add_tensor(w, f"blk.{il}.ssm_conv1d.weight", (4, 128), F32)

    path = write_model(tmp_path / "mamba.gguf", "mamba", metadata=metadata, layer_tensors=ssm)
    estimate = estimate_llama_box(read_gguf_header(path), LlamaBoxOptions(ctx_size=32768, parallel=4))
    state = 3 * 128 + 16 * 128  # conv (kernel - 1) x inner + state x inner, f32
    assert estimate.kv_cache_bytes == 2 * state * 4 * 4  # layers x state x f32 x slots


# --- split models ----------------------------------------------------------------------------------------


def test_split_model_counts_the_weights_of_every_shard(tmp_path: Path) -> None:
    write_model(tmp_path / "model.gguf", split_max_tensors=10)
    shards = read_gguf_shards(tmp_path / "model-00001-of-00003.gguf")
    estimate = estimate_llama_box(shards[0], LlamaBoxOptions(), shards)
    assert estimate.weights_bytes == EMBD_BYTES + 2 * LAYER_BYTES + OUTPUT_BYTES
    assert estimate.total_layers == 3


@pytest.mark.parametrize(
    "params", [["-ngl", "50"], ["--ngl=50"], ["--n-gpu-layers", "50"], ["--gpu-layers 50"], ["--ngl", "50"]]
)
def test_gpu_layers_are_read_in_every_spelling_upstream_gpustack_users_write(params: list[str]) -> None:
    assert parse_llama_box_options(params).gpu_layers == 50


def test_cpu_threads_are_read_and_zero_or_less_means_every_core() -> None:
    options = parse_llama_box_options(["-t", "4", "--threads-batch=8"])
    assert (options.threads, options.threads_batch) == (4, 8)
    assert parse_llama_box_options(["--threads", "-1"]).threads == 0
    assert LlamaBoxOptions().threads is None
    with pytest.raises(ValueError, match="-t: expects a number of threads, got 'many'"):
        parse_llama_box_options(["-t", "many"])
