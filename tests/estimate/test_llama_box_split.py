"""Placements over several devices: which layers go where (as llama.cpp decides), what each device holds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from gguf import GGUFWriter

from gpustack.estimate.gguf import read_gguf_header
from gpustack.estimate.llama_box import (
    DeviceSplit,
    LlamaBoxOptions,
    OffloadRow,
    estimate_llama_box,
    layers_from_tensor_split,
    parse_llama_box_options,
    tensor_split_for,
)
from gpustack.estimate.llama_box_split import layer_devices

from .test_gguf import F32, add_tensor, write_model
from .test_llama_box import (
    ACT,
    CPU_COMPUTE,
    EMBD_BYTES,
    GPU_COMPUTE,
    GPU_FIRST_COMPUTE,
    HOST_COMPUTE,
    KV_LAYER,
    LAYER_BYTES,
    MASK,
    OUTPUT_BUFFER,
    OUTPUT_BYTES,
    OUTPUT_PEAK,
    RUNTIME,
)

# With every layer on two or more devices, llama.cpp turns on pipeline parallelism: each backend keeps
# 4 copies of its inputs (3 more masks) plus hidden states (14 on the first device, 7 on the others and
# on the CPU), as measured on RPC devices.
PIPELINE_FIRST = 3 * MASK + 14 * ACT
PIPELINE_OTHER = 3 * MASK + 7 * ACT
PIPELINE_HOST = 3 * MASK + 7 * ACT
HOST = RUNTIME + OUTPUT_BUFFER + EMBD_BYTES  # what the CPU holds in every placement


@pytest.fixture
def llama(tmp_path: Path) -> Path:
    return write_model(tmp_path / "llama.gguf")  # 2 layers + output


# --- llama.cpp's layer assignment ----------------------------------------------------------------------


def test_the_cpu_keeps_the_first_layers_and_the_last_device_the_output_layer() -> None:
    assert layer_devices(5, [2, 1]) == [None, None, 0, 0, 1]
    assert layer_devices(5, [0, 3]) == [None, None, 1, 1, 1]
    assert layer_devices(3, []) == [None, None, None]
    with pytest.raises(ValueError, match="4 layers placed on devices, but the model has only 3"):
        layer_devices(3, [2, 2])


@pytest.mark.parametrize(
    ("proportions", "gpu_layers", "total", "expected"),
    [
        # measured with llama-server and two RPC servers: the KV and model buffers of each device
        ([1, 1], 999, 31, [16, 15]),  # SmolLM2: 30 layers + output
        ([3, 1], 999, 31, [24, 7]),
        ([1, 1], 10, 31, [5, 5]),
        ([3, 1], 10, 31, [8, 2]),
        ([1, 1], 18, 19, [9, 9]),  # Gemma 3 270M: 18 layers + output
        ([1, 1], 999, 19, [10, 9]),
        # zero shares and fractions
        ([0, 1], 31, 31, [0, 31]),
        ([1, 0, 1], 7, 31, [4, 0, 3]),
        ([0.25, 0.75], 8, 31, [2, 6]),
    ],
)
def test_tensor_split_becomes_layers_as_in_llama_cpp(
    proportions: list[float], gpu_layers: int, total: int, expected: list[int]
) -> None:
    assert layers_from_tensor_split(proportions, gpu_layers, total) == expected


def test_tensor_split_for_reproduces_any_layer_counts() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        total = rng.randint(1, 200)
        counts = [0] * rng.randint(1, 8)
        for _ in range(rng.randint(1, total)):
            counts[rng.randrange(len(counts))] += 1
        value = tensor_split_for(counts)
        proportions = parse_llama_box_options(["-ts", value]).tensor_split
        assert proportions is not None
        assert layers_from_tensor_split(proportions, sum(counts), total) == counts, (total, counts)


def test_tensor_split_for_is_the_counts_themselves() -> None:
    assert tensor_split_for([10, 0, 21]) == "10,0,21"
    with pytest.raises(ValueError, match="at least one device"):
        tensor_split_for([])
    with pytest.raises(ValueError, match="cannot be negative"):
        tensor_split_for([3, -1])


def test_an_all_zero_tensor_split_is_left_to_the_engine() -> None:
    assert layers_from_tensor_split([0, 0], 0, 31) == [0, 0]
    with pytest.raises(ValueError, match="free memory"):
        layers_from_tensor_split([0, 0], 10, 31)


def test_split_for_options_follows_ngl_ts_and_split_mode(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    options = parse_llama_box_options(["-ngl", "2", "-ts", "1,1"])
    assert estimate.split_for_options(options, 2) == [1, 1]
    assert estimate.split_for_options(parse_llama_box_options(["-ts", "0,1,0"]), 3) == [0, 3, 0]
    assert estimate.split_for_options(parse_llama_box_options(["-sm", "none", "-mg", "1"]), 2) == [0, 3]
    assert estimate.split_for_options(LlamaBoxOptions(), 1) == [3]
    with pytest.raises(ValueError, match="splits the layers by free memory"):
        estimate.split_for_options(LlamaBoxOptions(), 2)


# --- what each device holds: llama ---------------------------------------------------------------------


def test_split_over_two_devices_with_every_layer_offloaded(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    placed = estimate.split([1, 2])  # device 0: layer 0; device 1: layer 1 and the output layer
    assert placed == DeviceSplit(
        ram=HOST + HOST_COMPUTE + PIPELINE_HOST,
        vram=[
            LAYER_BYTES + KV_LAYER + GPU_FIRST_COMPUTE + PIPELINE_FIRST,
            LAYER_BYTES + KV_LAYER + OUTPUT_BYTES + max(GPU_COMPUTE, OUTPUT_PEAK - ACT) + PIPELINE_OTHER,
        ],
    )


def test_split_with_layers_left_on_the_cpu_has_no_pipeline(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    placed = estimate.split([1, 1])  # CPU: layer 0; device 0: layer 1; device 1: the output layer
    assert placed == DeviceSplit(
        ram=HOST + LAYER_BYTES + KV_LAYER + CPU_COMPUTE,
        vram=[LAYER_BYTES + KV_LAYER + GPU_COMPUTE, OUTPUT_BYTES + max(GPU_COMPUTE, OUTPUT_PEAK - ACT)],
    )


def test_a_device_without_layers_holds_nothing(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    placed = estimate.split([0, 3])
    assert placed.vram[0] == 0
    # two devices and every layer offloaded: pipeline parallelism even though one device is idle
    assert (
        placed.vram[1] == 2 * LAYER_BYTES + 2 * KV_LAYER + OUTPUT_BYTES + GPU_FIRST_COMPUTE + PIPELINE_FIRST
    )
    assert estimate.split([3]) == DeviceSplit(
        ram=estimate.full_offload.ram, vram=[estimate.full_offload.vram]
    )
    assert estimate.split([]) == DeviceSplit(ram=estimate.cpu_only.ram, vram=[])


def test_no_kv_offload_keeps_the_kv_cache_in_ram(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), parse_llama_box_options(["-nkvo"]))
    placed = estimate.split([1, 2])
    assert placed.ram == HOST + HOST_COMPUTE + 2 * KV_LAYER  # and no pipeline parallelism
    assert placed.vram == [LAYER_BYTES + GPU_FIRST_COMPUTE, LAYER_BYTES + OUTPUT_BYTES + GPU_COMPUTE]


def test_split_refuses_more_layers_than_the_model_has(llama: Path) -> None:
    estimate = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    with pytest.raises(ValueError, match="only 3"):
        estimate.split([2, 2])


# --- other architectures -------------------------------------------------------------------------------


def test_gemma3_keeps_each_layers_window_or_full_cache_and_the_tied_output_copy(tmp_path: Path) -> None:
    def metadata(w: GGUFWriter) -> None:
        w.add_sliding_window(128)
        w.add_key_length(32)
        w.add_value_length(32)

    path = write_model(
        tmp_path / "g.gguf", "gemma3", n_layer=6, n_head=4, n_head_kv=1, tied=True, metadata=metadata
    )
    estimate = estimate_llama_box(read_gguf_header(path), LlamaBoxOptions())
    per_cell = (32 + 32) * 2
    window, full = 4 * 768 * per_cell, 4 * 2048 * per_cell  # layer 5 is the full-attention one
    layer = LAYER_BYTES - 2 * 1152 + 2 * 576  # k/v are 64x16 with one KV head
    compute = estimate.compute
    placed = estimate.split([2, 3])  # CPU: layers 0-1; device 0: layers 2-3; device 1: 4, 5, output
    assert placed.vram == [
        2 * (layer + window) + compute.gpu(runs_first_layer=False, runs_output=False),
        2 * layer + window + full + 256 + EMBD_BYTES + compute.gpu(runs_first_layer=False, runs_output=True),
    ]
    assert placed.ram == HOST + 2 * (layer + window) + compute.layers


def test_qwen2_per_layer_kv_heads_follow_their_layers(tmp_path: Path) -> None:
    path = write_model(tmp_path / "q.gguf", "qwen2", n_layer=3, n_head_kv=[2, 1, 4])
    estimate = estimate_llama_box(read_gguf_header(path), LlamaBoxOptions(ctx_size=4096, parallel=1))
    per_head = 4096 * (16 + 16) * 2
    assert estimate.layer_kv_bytes == [2 * per_head, per_head, 4 * per_head, 0]
    layer = LAYER_BYTES + 2 * 1152  # k/v are 64x64: sized for the widest layer's 4 KV heads
    placed = estimate.split([1, 1])  # CPU: layers 0-1; device 0: layer 2; device 1: the output layer
    compute = estimate.compute
    assert placed.vram == [
        layer + 4 * per_head + compute.gpu(runs_first_layer=False, runs_output=False),
        OUTPUT_BYTES + compute.gpu(runs_first_layer=False, runs_output=True),
    ]
    assert placed.ram == HOST - OUTPUT_BUFFER + 4 * 256 + 2 * layer + 3 * per_head + compute.layers


def test_mamba_state_goes_with_its_layer(tmp_path: Path) -> None:
    def metadata(w: GGUFWriter) -> None:
        w.add_ssm_conv_kernel(4)
        w.add_ssm_inner_size(128)
        w.add_ssm_state_size(16)
        w.add_ssm_time_step_rank(4)

    def ssm(w: GGUFWriter, il: int) -> None:
        add_tensor(w, f"blk.{il}.ssm_conv1d.weight", (4, 128), F32)

    path = write_model(tmp_path / "m.gguf", "mamba", metadata=metadata, layer_tensors=ssm)
    estimate = estimate_llama_box(read_gguf_header(path), LlamaBoxOptions(parallel=4))
    state = (3 * 128 + 16 * 128) * 4 * 4  # conv and ssm state, f32, 4 slots
    layer = LAYER_BYTES + 4 * 128 * 4
    placed = estimate.split([1])  # the output layer alone on the device: both states stay on the CPU
    assert placed.ram == HOST + 2 * (layer + state) + estimate.compute.layers
    assert estimate.split([2]).vram[0] == layer + state + OUTPUT_BYTES + estimate.compute.gpu(False, True)


# --- the one-device table ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2"])
def test_table_moves_memory_from_ram_to_vram_layer_by_layer(tmp_path: Path, arch: str) -> None:
    path = write_model(tmp_path / f"{arch}.gguf", arch, n_layer=5, tied=arch == "gemma3")
    estimate = estimate_llama_box(read_gguf_header(path), LlamaBoxOptions())
    rows = estimate.table()
    assert [r.layers for r in rows] == list(range(estimate.total_layers + 1))
    assert rows[0] == OffloadRow(0, estimate.cpu_only.ram, 0)
    assert rows[-1] == OffloadRow(
        estimate.total_layers, estimate.full_offload.ram, estimate.full_offload.vram
    )
    for before, after in zip(rows, rows[1:], strict=False):
        assert after.ram <= before.ram
        assert after.vram >= before.vram
    for row in rows:
        assert row == OffloadRow(
            row.layers, estimate.offload(row.layers).ram, estimate.offload(row.layers).vram
        )


def test_the_host_holds_what_it_sends_to_rpc_servers_while_loading(llama: Path) -> None:
    local = estimate_llama_box(read_gguf_header(llama), LlamaBoxOptions())
    placed = local.split([1, 2])
    # measured: llama-server's peak RSS grows by the weights it sends to RPC servers (queued copies)
    sent_to_first = LAYER_BYTES
    assert local.split([1, 2], rpc_devices=1) == DeviceSplit(placed.ram + sent_to_first, placed.vram)
    assert local.split([1, 2], rpc_devices=2).ram == placed.ram + 2 * LAYER_BYTES + OUTPUT_BYTES
    rpc = estimate_llama_box(read_gguf_header(llama), parse_llama_box_options(["--rpc", "h:1,h:2"]))
    assert rpc.split([1, 2]) == local.split([1, 2], rpc_devices=2)
    assert rpc.split([1, 2], rpc_devices=0) == placed


def test_split_mode_none_uses_one_device_without_pipeline(llama: Path) -> None:
    options = parse_llama_box_options(["-sm", "none", "-mg", "1"])
    estimate = estimate_llama_box(read_gguf_header(llama), options)
    counts = estimate.split_for_options(options, 2)
    assert counts == [0, 3]
    assert estimate.split(counts).vram == [0, estimate.full_offload.vram]
