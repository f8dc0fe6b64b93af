"""Realistic clusters and models for scheduler tests: real GGUF headers (data left sparse) and the real
estimator, workers shaped like the machines users run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

from gpustack.estimate.gguf import read_gguf_shards
from gpustack.estimate.llama_box import LlamaBoxEstimate, estimate_llama_box, parse_llama_box_options
from gpustack.estimate.llama_box_options import with_gpustack_defaults
from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.schemas.models import ResourceClaim

GiB = 1024**3
Q4_K, Q6_K, F32 = GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K, GGMLQuantizationType.F32
Q2_K, IQ2_XXS, BF16 = GGMLQuantizationType.Q2_K, GGMLQuantizationType.IQ2_XXS, GGMLQuantizationType.BF16


def _info(writer: GGUFWriter, name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    """Register a tensor of ggml `shape` (innermost first) without writing its data."""
    block, size = GGML_QUANT_SIZES[qtype]
    elements = int(np.prod(shape))
    nbytes = elements // block * size
    writer.add_tensor_info(name, tuple(reversed(shape)), np.dtype(np.float32), nbytes, raw_dtype=qtype)
    return nbytes


def write_llama(
    path: Path,
    *,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int,
    n_ff: int,
    n_vocab: int = 128256,
    qtype: GGMLQuantizationType = Q4_K,
) -> Path:
    """A llama-architecture GGUF of the given shape; the weights are a sparse hole (no disk used)."""
    writer = GGUFWriter(path, "llama")
    writer.add_block_count(n_layer)
    writer.add_context_length(131072)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_token_list([f"t{i}" for i in range(256)])  # the vocabulary size comes from token_embd
    kv_dim = n_embd // n_head * n_head_kv
    data = _info(writer, "token_embd.weight", (n_embd, n_vocab), qtype)
    for il in range(n_layer):
        data += _info(writer, f"blk.{il}.attn_norm.weight", (n_embd,), F32)
        data += _info(writer, f"blk.{il}.attn_q.weight", (n_embd, n_embd), qtype)
        data += _info(writer, f"blk.{il}.attn_k.weight", (n_embd, kv_dim), qtype)
        data += _info(writer, f"blk.{il}.attn_v.weight", (n_embd, kv_dim), Q6_K)
        data += _info(writer, f"blk.{il}.attn_output.weight", (n_embd, n_embd), qtype)
        data += _info(writer, f"blk.{il}.ffn_norm.weight", (n_embd,), F32)
        data += _info(writer, f"blk.{il}.ffn_gate.weight", (n_embd, n_ff), qtype)
        data += _info(writer, f"blk.{il}.ffn_up.weight", (n_embd, n_ff), qtype)
        data += _info(writer, f"blk.{il}.ffn_down.weight", (n_ff, n_embd), Q6_K)
    data += _info(writer, "output_norm.weight", (n_embd,), F32)
    data += _info(writer, "output.weight", (n_embd, n_vocab), Q6_K)
    return _finish(writer, path, data)


def _finish(writer: GGUFWriter, path: Path, data: int) -> Path:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with open(path, "r+b") as handle:  # the data section as a hole: the reader sizes it from the header
        handle.seek(0, 2)
        handle.truncate(handle.tell() + data + 4096)
    return path


def deepseek_r1_iq2(directory: Path) -> Path:
    """DeepSeek R1 (671B MoE, MLA) at its real shapes, quantized like a 2-bit "UD-IQ2_XXS" file: routed
    experts IQ2_XXS (gate, up) and Q2_K (down), everything else Q4_K/Q6_K. About 181 GiB of weights."""
    return write_deepseek_r1(directory / "deepseek-r1-iq2_xxs.gguf", IQ2_XXS, Q2_K, Q4_K, Q6_K)


def deepseek_r1_bf16(directory: Path) -> Path:
    """DeepSeek R1 unquantized (BF16, as converted from the FP8 release): about 1.25 TiB of weights."""
    return write_deepseek_r1(directory / "deepseek-r1-bf16.gguf", BF16, BF16, BF16, BF16)


def write_deepseek_r1(
    path: Path,
    experts: GGMLQuantizationType,
    experts_down: GGMLQuantizationType,
    qtype: GGMLQuantizationType,
    wide: GGMLQuantizationType,
) -> Path:
    """DeepSeek R1's real shapes (61 layers, 3 dense then 58 MoE of 256 experts, MLA attention)."""
    n_layer, n_embd, n_vocab, n_head = 61, 7168, 129280, 128
    n_ff, n_ff_exp, n_expert, kv_lora, q_lora, rope, nope, v_head = 18432, 2048, 256, 512, 1536, 64, 128, 128
    writer = GGUFWriter(path, "deepseek2")
    writer.add_block_count(n_layer)
    writer.add_context_length(163840)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(1)  # MLA: one compressed KV "head" per token
    writer.add_key_length(kv_lora + rope)
    writer.add_value_length(kv_lora)
    writer.add_key_length_mla(nope + rope)
    writer.add_value_length_mla(v_head)
    writer.add_q_lora_rank(q_lora)
    writer.add_kv_lora_rank(kv_lora)
    writer.add_rope_dimension_count(rope)
    writer.add_leading_dense_block_count(3)
    writer.add_expert_count(n_expert)
    writer.add_expert_shared_count(1)
    writer.add_expert_used_count(8)
    writer.add_expert_feed_forward_length(n_ff_exp)
    writer.add_token_list([f"t{i}" for i in range(256)])
    data = _info(writer, "token_embd.weight", (n_embd, n_vocab), qtype)
    for il in range(n_layer):
        p = f"blk.{il}."
        data += _info(writer, p + "attn_norm.weight", (n_embd,), F32)
        data += _info(writer, p + "attn_q_a_norm.weight", (q_lora,), F32)
        data += _info(writer, p + "attn_kv_a_norm.weight", (kv_lora,), F32)
        data += _info(writer, p + "attn_q_a.weight", (n_embd, q_lora), qtype)
        data += _info(writer, p + "attn_q_b.weight", (q_lora, n_head * (nope + rope)), qtype)
        data += _info(writer, p + "attn_kv_a_mqa.weight", (n_embd, kv_lora + rope), wide)
        data += _info(writer, p + "attn_k_b.weight", (nope, kv_lora, n_head), qtype)
        data += _info(writer, p + "attn_v_b.weight", (kv_lora, v_head, n_head), qtype)
        data += _info(writer, p + "attn_output.weight", (n_head * v_head, n_embd), qtype)
        data += _info(writer, p + "ffn_norm.weight", (n_embd,), F32)
        if il < 3:  # dense feed-forward in the first layers
            data += _info(writer, p + "ffn_gate.weight", (n_embd, n_ff), qtype)
            data += _info(writer, p + "ffn_up.weight", (n_embd, n_ff), qtype)
            data += _info(writer, p + "ffn_down.weight", (n_ff, n_embd), wide)
            continue
        data += _info(writer, p + "ffn_gate_inp.weight", (n_embd, n_expert), F32)
        data += _info(writer, p + "exp_probs_b.bias", (n_expert,), F32)
        data += _info(writer, p + "ffn_gate_exps.weight", (n_embd, n_ff_exp, n_expert), experts)
        data += _info(writer, p + "ffn_up_exps.weight", (n_embd, n_ff_exp, n_expert), experts)
        data += _info(writer, p + "ffn_down_exps.weight", (n_ff_exp, n_embd, n_expert), experts_down)
        data += _info(writer, p + "ffn_gate_shexp.weight", (n_embd, n_ff_exp), qtype)
        data += _info(writer, p + "ffn_up_shexp.weight", (n_embd, n_ff_exp), qtype)
        data += _info(writer, p + "ffn_down_shexp.weight", (n_ff_exp, n_embd), wide)
    data += _info(writer, "output_norm.weight", (n_embd,), F32)
    data += _info(writer, "output.weight", (n_embd, n_vocab), wide)
    return _finish(writer, path, data)


def llama_70b(directory: Path) -> Path:
    return write_llama(
        directory / "llama-70b-q4_k.gguf", n_layer=80, n_embd=8192, n_head=64, n_head_kv=8, n_ff=28672
    )


def llama_8b(directory: Path) -> Path:
    return write_llama(
        directory / "llama-8b-q4_k.gguf", n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336
    )


def estimate(path: Path, *parameters: str) -> LlamaBoxEstimate:
    options = parse_llama_box_options(list(parameters))
    with_gpustack_defaults(options)
    shards = read_gguf_shards(path)
    return estimate_llama_box(shards[0], options, shards)


def worker(
    worker_id: int,
    name: str,
    gpus: list[tuple[str, str, int]] = (),  # type: ignore[assignment]
    ram: int = 128 * GiB,
    *,
    os: str = "linux",
    state: str = "ready",
    labels: dict[str, str] | None = None,
    unified: bool = False,
    cores: int = 32,
) -> WorkerSnapshot:
    """gpus: (type, name, total bytes) per GPU, indexed in order; cores: logical CPU cores."""
    return WorkerSnapshot(
        id=worker_id,
        cpu_cores=cores,
        name=name,
        ip=f"10.0.0.{worker_id}",
        state=state,
        labels={"os": os, "worker-name": name, **(labels or {})},
        ram_total=ram,
        ram_reserved=2 * GiB,
        unified_memory=unified,
        ray_head_ports=(40096, 40122),  # every worker offers Ray head ports, as by default
        gpus=[
            GPUSnapshot(
                index=i,
                id=f"{name}:{kind}:{i}",
                name=model,
                type=kind,
                vendor="",
                total=total,
                reserved=GiB,
                rpc_port=40064 + i,  # every worker runs its RPC servers, as by default
            )
            for i, (kind, model, total) in enumerate(gpus)
        ],
    )


def rtx4090_box(worker_id: int = 1, name: str = "gpu-a") -> WorkerSnapshot:
    return worker(worker_id, name, [("cuda", "NVIDIA GeForce RTX 4090", 24 * GiB)] * 2, 64 * GiB)


def a100_box(worker_id: int = 2, name: str = "a100") -> WorkerSnapshot:
    return worker(worker_id, name, [("cuda", "NVIDIA A100-SXM4-80GB", 80 * GiB)] * 8, 1024 * GiB)


def mac_studio(worker_id: int = 3, name: str = "mac-1") -> WorkerSnapshot:
    return worker(
        worker_id, name, [("mps", "Apple M2 Ultra", 192 * GiB)], 192 * GiB, os="darwin", unified=True
    )


def ascend_box(worker_id: int = 4, name: str = "npu-1") -> WorkerSnapshot:
    return worker(worker_id, name, [("npu", "Ascend 910B3", 64 * GiB)] * 8, 1024 * GiB)


def cpu_box(worker_id: int = 5, name: str = "cpu-1", ram: int = 64 * GiB) -> WorkerSnapshot:
    return worker(worker_id, name, [], ram)


def claim(worker: WorkerSnapshot, ram: int = 0, **vram_by_index: int) -> None:
    """Memory another instance already holds, e.g. claim(w, ram=GiB, gpu0=20 * GiB)."""
    worker.add_claim(
        ResourceClaim(ram=ram, vram={int(k.removeprefix("gpu")): v for k, v in vram_by_index.items()})
    )
