"""Placement on realistic clusters: which tier each backend lands in, claims, strategies, and reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack.estimate.mindie import MindieOptions, estimate_mindie
from gpustack.estimate.safetensors import ModelFiles
from gpustack.estimate.vllm import VllmOptions, estimate_vllm
from gpustack.scheduler.candidates import NoPlacement, Placement
from gpustack.scheduler.place import place
from gpustack.scheduler.request import LlamaBoxNeed, PlacementRequest, SingleDeviceNeed, TensorParallelNeed
from gpustack.schemas.models import PlacementStrategy
from gpustack.schemas.placement import LayerLayout
from tests.scheduler.fixtures import (
    GiB,
    a100_box,
    ascend_box,
    claim,
    cpu_box,
    estimate,
    llama_8b,
    llama_70b,
    mac_studio,
    rtx4090_box,
    worker,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("models")
    return {"70b": llama_70b(directory), "8b": llama_8b(directory)}


def gguf(path: Path, *parameters: str, **kwargs) -> PlacementRequest:
    return PlacementRequest("m", "llama-box", LlamaBoxNeed(estimate(path, *parameters)), **kwargs)


def placed(result: Placement | NoPlacement) -> Placement:
    assert isinstance(result, Placement), result.message()
    return result


def refused(result: Placement | NoPlacement) -> NoPlacement:
    assert isinstance(result, NoPlacement), result.summary
    return result


# ---- llama-box: the five tiers


def test_a_model_that_fits_one_gpu_takes_one_gpu(models: dict[str, Path]) -> None:
    result = placed(place(gguf(models["8b"]), [cpu_box(), rtx4090_box()]))
    assert result.mode == "gpu" and result.main.worker.name == "gpu-a" and len(result.main.gpu_indexes) == 1
    need = estimate(models["8b"]).full_offload
    assert list(result.main.claim.vram.values()) == [need.vram] and result.main.claim.offload_layers == 33


def test_70b_q4_spreads_over_both_gpus_of_one_worker_with_a_tensor_split(models: dict[str, Path]) -> None:
    result = placed(place(gguf(models["70b"]), [rtx4090_box(), cpu_box()]))
    assert result.mode == "multi-gpu" and sorted(result.main.gpu_indexes) == [0, 1]
    assert all(v <= 23 * GiB for v in result.main.claim.vram.values())
    layers = result.layout.tensor_split
    assert sum(layers) == 81 and result.layout.gpu_layers == 81


def test_70b_q4_splits_over_two_workers_through_rpc_when_no_worker_has_room(models: dict[str, Path]) -> None:
    first, second = rtx4090_box(1, "gpu-a"), rtx4090_box(2, "gpu-b")
    claim(first, gpu0=10 * GiB)  # another model already holds memory on each worker
    claim(second, gpu1=12 * GiB)
    result = placed(place(gguf(models["70b"]), [first, second]))
    assert result.mode == "rpc" and len(result.subordinates) == 1
    workers = {result.main.worker.name, result.subordinates[0].worker.name}
    assert workers == {"gpu-a", "gpu-b"}
    devices = result.layout.rpc
    assert devices == ["10.0.0.2:40064"]  # the other worker's GPU, through its RPC server
    assert len(result.layout.tensor_split) == len(devices) + len(result.main.gpu_indexes)
    for assignment in (result.main, *result.subordinates):
        for index, amount in assignment.claim.vram.items():
            assert amount <= assignment.worker.vram_free[index]  # each device holds only what fits


def test_rpc_is_not_used_when_the_model_forbids_distributed_inference(models: dict[str, Path]) -> None:
    first, second = rtx4090_box(1, "gpu-a"), rtx4090_box(2, "gpu-b")
    claim(first, gpu0=10 * GiB)
    claim(second, gpu1=12 * GiB)
    request = gguf(models["70b"], distributed_inference_across_workers=False)
    result = placed(place(request, [first, second]))
    assert result.mode == "partial-offload"  # the next tier: part of the layers in RAM
    assert 0 < result.main.claim.offload_layers < 81


def test_partial_offload_puts_as_many_layers_on_the_gpu_as_fit(models: dict[str, Path]) -> None:
    single = worker(1, "gpu-a", [("cuda", "NVIDIA GeForce RTX 4090", 24 * GiB)], 128 * GiB)
    result = placed(place(gguf(models["70b"]), [single]))
    assert result.mode == "partial-offload"
    offloaded = result.main.claim.offload_layers
    table = estimate(models["70b"]).table()
    assert table[offloaded].vram <= 23 * GiB < table[offloaded + 1].vram
    # 32 cores: llama.cpp's default of 16 threads, passed explicitly, for the layers on the CPU
    assert result.layout == LayerLayout(gpu_layers=offloaded, threads=16)
    assert result.main.claim.ram == table[offloaded].ram and result.main.claim.cpu_threads == 16


def test_without_cpu_offloading_a_too_big_model_is_refused_gpu_by_gpu(models: dict[str, Path]) -> None:
    single = worker(1, "gpu-a", [("cuda", "NVIDIA GeForce RTX 4090", 24 * GiB)], 128 * GiB)
    result = refused(place(gguf(models["70b"], cpu_offloading=False), [single]))
    assert any(
        r.startswith("worker gpu-a, GPU 0 (NVIDIA GeForce RTX 4090): 23.0 GiB allocatable, needs 44.1 GiB")
        for r in result.reasons
    )
    assert "CPU offloading is off for this model, so every layer must be on GPUs" in result.reasons
    assert any("allowing CPU offloading" in hint for hint in result.hints)


def test_cpu_only_box_runs_it_in_ram(models: dict[str, Path]) -> None:
    result = placed(place(gguf(models["8b"]), [cpu_box()]))
    assert result.mode == "cpu" and result.main.gpu_indexes == [] and result.main.claim.vram == {}
    assert result.main.claim.ram == estimate(models["8b"]).cpu_only.ram


def test_mac_studio_unified_memory_holds_the_70b_on_its_gpu(models: dict[str, Path]) -> None:
    mac = mac_studio()
    result = placed(place(gguf(models["70b"]), [mac]))
    assert result.mode == "gpu" and result.main.worker.name == "mac-1"
    mac.add_claim(result.main.claim)
    # Unified memory: the GPU claim is RAM too, counted once against both.
    assert mac.ram_free == 190 * GiB - sum(result.main.claim.vram.values()) - result.main.claim.ram


# ---- accounting, strategies, selectors


def test_an_instance_in_error_still_holds_its_memory(models: dict[str, Path]) -> None:
    box = cpu_box(ram=16 * GiB)
    need = estimate(models["8b"]).cpu_only.ram
    claim(box, ram=10 * GiB)  # e.g. an instance in error keeps its claim until it is removed
    result = refused(place(gguf(models["8b"]), [box]))
    assert result.reasons == [
        f"worker cpu-1: 4.0 GiB RAM allocatable, needs {need / GiB:.1f} GiB to run on the CPU"
    ]


def test_binpack_fills_the_fullest_gpu_and_spread_the_least_loaded_worker(models: dict[str, Path]) -> None:
    def cluster() -> list:
        busy, idle = rtx4090_box(1, "busy"), rtx4090_box(2, "idle")
        claim(busy, gpu0=10 * GiB)
        return [busy, idle]

    packed = placed(place(gguf(models["8b"], placement_strategy=PlacementStrategy.BINPACK), cluster()))
    spread = placed(place(gguf(models["8b"], placement_strategy=PlacementStrategy.SPREAD), cluster()))
    assert (packed.main.worker.name, packed.main.gpu_indexes) == ("busy", [0])
    assert spread.main.worker.name == "idle"


def test_spread_places_replicas_on_different_workers_and_binpack_on_one(models: dict[str, Path]) -> None:
    for strategy, expected in (
        (PlacementStrategy.SPREAD, {"w1", "w2", "w3"}),
        (PlacementStrategy.BINPACK, {"w1"}),
    ):
        workers = [rtx4090_box(i, f"w{i}") for i in (1, 2, 3)]
        chosen = set()
        for _ in range(3):
            result = placed(place(gguf(models["8b"], placement_strategy=strategy), workers))
            result.main.worker.add_claim(result.main.claim)  # what the shell does between placements
            chosen.add(result.main.worker.name)
        assert chosen == expected, strategy


def test_manual_gpu_selector_uses_exactly_those_gpus_or_says_why_not(models: dict[str, Path]) -> None:
    cluster = [rtx4090_box(1, "gpu-a"), a100_box(2, "a100")]
    result = placed(place(gguf(models["8b"], gpu_ids=("a100:cuda:5",)), cluster))
    assert (result.main.worker.name, result.main.gpu_indexes) == ("a100", [5])
    both = placed(place(gguf(models["70b"], gpu_ids=("gpu-a:cuda:0", "gpu-a:cuda:1")), cluster))
    assert sorted(both.main.gpu_indexes) == [0, 1] and both.main.worker.name == "gpu-a"
    missing = refused(place(gguf(models["8b"], gpu_ids=("gpu-z:cuda:0",)), cluster))
    assert (
        "selected GPU gpu-z:cuda:0: no worker has it (ids look like <worker>:<type>:<index>)"
        in missing.reasons
    )


def test_label_selector_must_match_every_key(models: dict[str, Path]) -> None:
    cluster = [mac_studio(), worker(7, "linux-1", [("cuda", "NVIDIA L40S", 48 * GiB)], labels={"rack": "a1"})]
    result = placed(place(gguf(models["8b"], worker_selector={"os": "linux", "rack": "a1"}), cluster))
    assert result.main.worker.name == "linux-1"
    none = refused(place(gguf(models["8b"], worker_selector={"rack": "b2"}), cluster))
    assert "worker mac-1: label rack=b2 required" in none.reasons
    assert "worker linux-1: label rack=b2 required, worker has rack=a1" in none.reasons


def test_a_model_that_fits_nowhere_lists_every_reason_and_hints(models: dict[str, Path]) -> None:
    down = rtx4090_box(1, "gpu-a")
    down.state, down.state_message = "not_ready", "no heartbeat for 16s"
    small = worker(2, "gpu-b", [("cuda", "NVIDIA GeForce RTX 3060", 12 * GiB)], 16 * GiB)
    result = refused(place(gguf(models["70b"]), [down, small, cpu_box(3, "cpu-1", 32 * GiB)]))
    text = result.message()
    assert "worker gpu-a: not_ready (no heartbeat for 16s)" in text
    assert "worker gpu-b, GPU 0 (NVIDIA GeForce RTX 3060): 11.0 GiB allocatable, needs 44.1 GiB" in text
    assert "worker cpu-1: 30.0 GiB RAM allocatable, needs 44.7 GiB to run on the CPU" in text
    assert "a smaller --ctx-size" in text


# ---- vLLM, MindIE, vox-box


def llama_config(layers: int = 32, hidden: int = 4096, heads: int = 32, kv_heads: int = 8) -> ModelFiles:
    """An 8B-class llama checkpoint, BF16, described by its config and tensor table alone."""
    ff, vocab = 14336, 128256
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {
        "model.embed_tokens.weight": ("BF16", (vocab, hidden)),
        "lm_head.weight": ("BF16", (vocab, hidden)),
        "model.norm.weight": ("BF16", (hidden,)),
    }
    kv = hidden // heads * kv_heads
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": ("BF16", (hidden, hidden)),
            p + "self_attn.k_proj.weight": ("BF16", (kv, hidden)),
            p + "self_attn.v_proj.weight": ("BF16", (kv, hidden)),
            p + "self_attn.o_proj.weight": ("BF16", (hidden, hidden)),
            p + "mlp.gate_proj.weight": ("BF16", (ff, hidden)),
            p + "mlp.up_proj.weight": ("BF16", (ff, hidden)),
            p + "mlp.down_proj.weight": ("BF16", (hidden, ff)),
            p + "input_layernorm.weight": ("BF16", (hidden,)),
            p + "post_attention_layernorm.weight": ("BF16", (hidden,)),
        }
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "intermediate_size": ff, "vocab_size": vocab, "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    }  # fmt: skip
    return ModelFiles(config=config, tensors=tensors, total_bytes=0, source="test")


def vllm(files: ModelFiles, ray: bool = False, **options) -> PlacementRequest:
    opts = VllmOptions(**options)
    est = estimate_vllm(files, opts)
    need = TensorParallelNeed(
        check=lambda total, free, tp: est.check_gpu(total, free, tp, opts),
        num_attention_heads=est.num_attention_heads,
        utilization=opts.gpu_memory_utilization,
        multi_worker=ray,
        multi_worker_off_hint="" if ray else "start the server with --enable-ray to use several workers",
    )
    return PlacementRequest("m", "vllm", need)


def test_vllm_takes_one_gpu_and_claims_90_percent_of_it() -> None:
    result = placed(place(vllm(llama_config()), [a100_box()]))
    assert result.mode == "gpu" and list(result.main.claim.vram.values()) == [int(80 * GiB * 0.9)]


def test_vllm_qualifies_a_gpu_only_if_90_percent_of_it_is_allocatable() -> None:
    box = worker(1, "gpu-a", [("cuda", "NVIDIA L40S", 48 * GiB)])
    claim(box, gpu0=5 * GiB)  # 42 GiB allocatable of 48: less than 90 %
    result = refused(place(vllm(llama_config()), [box]))
    assert result.reasons == [
        "worker gpu-a, GPU 0 (NVIDIA L40S): needs 90% of 48.0 GiB (43.2 GiB) allocatable, has 42.0 GiB"
    ]
    assert any("--gpu-memory-utilization" in hint for hint in result.hints)
    lower = placed(place(vllm(llama_config(), gpu_memory_utilization=0.5), [box]))
    assert list(lower.main.claim.vram.values()) == [24 * GiB]


def test_vllm_uses_tensor_parallel_over_gpus_whose_count_divides_the_heads() -> None:
    # A 70B-class BF16 model (~131 GiB) does not fit one 80 GB A100: 2 GPUs, as 64 heads divide by 2.
    big = llama_config(layers=80, hidden=8192, heads=64, kv_heads=8)
    result = placed(place(vllm(big), [a100_box()]))
    assert result.mode == "tensor-parallel" and result.layout.tensor_parallel_size in (2, 4)
    assert len(result.main.gpu_indexes) == result.layout.tensor_parallel_size


def test_vllm_across_workers_only_with_ray() -> None:
    big = llama_config(layers=80, hidden=8192, heads=64, kv_heads=8)
    cluster = [rtx4090_box(1, "a"), rtx4090_box(2, "b"), rtx4090_box(3, "c"), rtx4090_box(4, "d")]
    without = refused(place(vllm(big), cluster))
    assert "across workers: start the server with --enable-ray to use several workers" in without.reasons
    with_ray = place(
        vllm(big, ray=True),
        [
            a100_box(
                1,
                "x",
            ),
            a100_box(2, "y"),
        ],
    )
    assert isinstance(with_ray, Placement)  # fits one worker: Ray not needed
    assert with_ray.mode == "tensor-parallel"


def test_vllm_runs_only_on_linux_and_never_on_the_cpu() -> None:
    result = refused(place(vllm(llama_config()), [mac_studio(), cpu_box()]))
    assert "worker mac-1: vllm runs only on Linux workers, this one runs darwin" in result.reasons
    assert "worker cpu-1: vllm needs cuda/dcu/rocm GPUs, worker has none" in result.reasons


def test_mindie_runs_on_ascend_npus_only() -> None:
    opts = MindieOptions()
    est = estimate_mindie(llama_config(), opts)
    need = TensorParallelNeed(
        check=lambda total, free, tp: est.check_gpu(total, free, tp, opts),
        num_attention_heads=est.num_attention_heads,
        utilization=opts.npu_memory_fraction,
        gpu_types=frozenset({"npu"}),
        multi_worker=True,
    )
    request = PlacementRequest("m", "ascend-mindie", need)
    result = placed(place(request, [a100_box(1, "a100"), ascend_box(2, "npu-1")]))
    assert result.main.worker.name == "npu-1" and len(result.main.gpu_indexes) == 1
    only_nvidia = refused(place(request, [a100_box(1, "a100")]))
    assert "worker a100: ascend-mindie needs npu GPUs, worker has cuda" in only_nvidia.reasons


def test_vox_box_takes_one_nvidia_gpu_else_the_cpu() -> None:
    need = SingleDeviceNeed(vram=3 * GiB, ram_on_gpu=GiB, ram_on_cpu=5 * GiB)
    request = PlacementRequest("whisper", "vox-box", need)
    on_gpu = placed(place(request, [ascend_box(1, "npu-1"), rtx4090_box(2, "gpu-a")]))
    assert on_gpu.main.worker.name == "gpu-a" and len(on_gpu.main.gpu_indexes) == 1
    on_cpu = placed(place(request, [ascend_box(1, "npu-1")]))
    assert on_cpu.mode == "cpu" and on_cpu.main.claim.ram == 5 * GiB


def test_a_gpu_lent_through_its_rpc_server_is_not_lent_to_a_second_instance(models: dict[str, Path]) -> None:
    # llama.cpp's RPC server serves one client at a time: a second RPC placement on it would hang.
    first, second = rtx4090_box(1, "gpu-a"), rtx4090_box(2, "gpu-b")
    claim(first, gpu0=10 * GiB)
    claim(second, gpu1=12 * GiB)
    result = placed(place(gguf(models["70b"]), [first, second]))
    assert result.mode == "rpc"
    result.apply()
    lender = result.subordinates[0]
    assert lender.worker.rpc_lent == set(lender.gpu_indexes)
    third = worker(3, "gpu-c", [("cuda", "NVIDIA GeForce RTX 4090", 24 * GiB)], 128 * GiB)
    again = place(gguf(models["70b"], cpu_offloading=False), [first, second, third])
    if isinstance(again, Placement):
        for assignment in again.subordinates:
            assert not set(assignment.gpu_indexes) & assignment.worker.rpc_lent
