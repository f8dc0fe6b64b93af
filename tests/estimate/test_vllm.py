"""The vLLM memory model, with numbers checked by hand against vLLM's own accounting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack.estimate.safetensors import read_local_model
from gpustack.estimate.vllm import (
    GiB,
    MiB,
    VllmOptions,
    estimate_safetensors_report,
    estimate_vllm,
    faq_rule_bytes,
    parse_vllm_options,
)
from tests.estimate.fixtures.safetensors_models import llama_config, llama_tensors, tiny_llama, write_model

TINY_WEIGHTS = 5_485_056  # 2,742,528 bf16 parameters
RUNTIME_GRAPHS_4_LAYERS = (384 + 128 + 12 * 4) * MiB  # runtime buffers + CUDA graph pool


def modelled(estimate, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    """Per-GPU bytes as modelled, before DESIGN.md's floor for 16-bit checkpoints (tested on its own)."""
    parts = estimate.breakdown(*args, **kwargs)
    return sum(v for k, v in parts.items() if k != "faq_rule_floor")


def tiny(tmp_path, **overrides):
    tiny_llama(str(tmp_path), **overrides)
    return read_local_model(str(tmp_path))


def test_llama_gqa_hand_checked(tmp_path):
    estimate = estimate_vllm(tiny(tmp_path), VllmOptions())
    assert estimate.architecture_known and estimate.architecture == "LlamaForCausalLM"
    assert estimate.weights_bytes == TINY_WEIGHTS
    # 4 layers × K and V × 2 KV heads × head size 32 × 2 bytes
    assert estimate.kv_bytes_per_token == 4 * 2 * 2 * 32 * 2 == 1024
    assert estimate.max_model_len == 4096  # the model's own, below GPUStack's 8192
    # 4096 tokens in 16-token blocks on 4 layers, plus vLLM's reserved null block
    assert estimate.kv_cache_bytes == 4 * 4096 * 256 + 4 * 16 * 256 == 4_210_688
    # profile run of 2048 tokens: residual stream 4×2048×256×2 + MLP 3×2048×512×2 (> sampler 3,203,072)
    assert estimate.activation_bytes == 4_194_304 + 6_291_456
    assert estimate.overhead_bytes == RUNTIME_GRAPHS_4_LAYERS
    assert modelled(estimate, 1) == 5_485_056 + 4_210_688 + 10_485_760 + 587_202_560 == 607_384_064


def test_tensor_parallel_splits_weights_kv_heads_and_mlp(tmp_path):
    estimate = estimate_vllm(tiny(tmp_path), VllmOptions())
    parts = estimate.breakdown(2)
    assert parts["weights"] == TINY_WEIGHTS // 2
    assert parts["kv_cache"] == 4 * 4096 * 128 + 4 * 16 * 128  # one KV head per GPU
    assert parts["activations"] == 4_194_304 + 3_145_728  # the stream is replicated, the MLP split
    assert modelled(estimate, 2) == 599_390_464


def test_options_change_the_estimate(tmp_path):
    options = parse_vllm_options(["--enforce-eager", "--max-model-len=1024", "--kv-cache-dtype", "fp8"])
    estimate = estimate_vllm(tiny(tmp_path), options)
    assert estimate.max_model_len == 1024
    assert estimate.kv_cache_bytes == 4 * 1024 * 128 + 4 * 16 * 128 == 532_480  # 1 byte per element
    assert estimate.overhead_bytes == 384 * MiB  # no CUDA graphs
    assert modelled(estimate, 1) == 5_485_056 + 532_480 + 10_485_760 + 402_653_184


def test_big_gpus_use_vllms_larger_batch_defaults(tmp_path):
    estimate = estimate_vllm(tiny(tmp_path), VllmOptions())
    # 8192 batched tokens and 1024 sequences on a GPU of 70 GiB or more
    assert estimate.breakdown(1, gpu_total=80 * GiB)["activations"] == 16_777_216 + 25_165_824
    assert modelled(estimate, 1, gpu_total=80 * GiB) == 638_841_344


def test_max_model_len_defaults_to_8192_when_the_model_allows_more(tmp_path):
    estimate = estimate_vllm(tiny(tmp_path, max_position_embeddings=131072), VllmOptions())
    assert estimate.max_model_len == 8192 and estimate.model_max_len == 131072


def test_llama3_8b_shapes(tmp_path):
    config = llama_config(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        max_position_embeddings=8192,
    )
    write_model(str(tmp_path), config, llama_tensors(32, 4096, 32, 8, 128, 14336, 128256), shards=4)
    estimate = estimate_vllm(read_local_model(str(tmp_path)), VllmOptions())
    assert estimate.weights_bytes == 16_060_522_496  # vLLM logs "Model loading took 14.96 GiB"
    assert estimate.kv_bytes_per_token == 131_072  # 128 KiB per token
    assert estimate.kv_cache_bytes == 1_073_741_824 + 2_097_152
    # the sampler's 256 × 128256 fp32 logits (×3) outweigh the 2048-token forward pass
    assert estimate.activation_bytes == 256 * 128256 * 12 + 256 * 4096 * 2
    assert modelled(estimate, 1) == 18_471_985_152  # 17.2 GiB
    options = VllmOptions()
    assert estimate.check_gpu(24 * GiB, 23 * GiB, 1, options) is None
    assert estimate.check_gpu(24 * GiB, 20 * GiB, 1, options) == (
        "needs 90% of 24.0 GiB (21.6 GiB) allocatable, has 20.0 GiB"
    )
    assert estimate.check_gpu(16 * GiB, 16 * GiB, 1, options) == (
        "needs 19.9 GiB within the 14.4 GiB vLLM may use (--gpu-memory-utilization 0.9):"
        " weights 15.0 GiB, kv cache 1.0 GiB, activations 378 MiB, runtime 896 MiB, faq rule floor 2.7 GiB"
    )
    assert estimate.check_gpu(16 * GiB, 16 * GiB, 2, options) is None
    # the FAQ's rule of thumb for comparison: weights × 1.2 + 2 GiB = 19.9 GiB
    report = estimate_safetensors_report(str(tmp_path), [])
    assert report["faq_rule_bytes"] == 19_272_626_996 + 2 * GiB
    assert report["per_gpu_bytes"]["1"] == 19_272_626_996 + 2 * GiB  # the floor; the model needs 17.2 GiB


def test_moe_activation_counts_routed_experts(tmp_path):
    config = llama_config(
        architectures=["MixtralForCausalLM"],
        model_type="mixtral",
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=500,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
    write_model(str(tmp_path), config, llama_tensors(2, 128, 4, 2, 32, 256, 500, experts=4))
    estimate = estimate_vllm(read_local_model(str(tmp_path)), VllmOptions())
    assert estimate.weights_bytes == 1_014_400 * 2
    # stream 4×2048×128×2 + fused-MoE caches 2048 tokens × 2 experts × (3×256 + 128) × 2 + fp32 router logits
    assert estimate.activation_bytes == 2_097_152 + 7_340_032 + 2048 * 4 * 4


def test_mla_kv_is_the_latent_and_not_split(tmp_path):
    config = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "kv_lora_rank": 64, "qk_rope_head_dim": 16,
        "qk_nope_head_dim": 32, "v_head_dim": 32, "vocab_size": 1000, "max_position_embeddings": 16384,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 128,
        "intermediate_size": 512, "torch_dtype": "bfloat16",
    }  # fmt: skip
    tensors = {
        "model.embed_tokens.weight": ("BF16", (1000, 256)),
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": ("BF16", (80, 256)),
        "model.layers.1.self_attn.kv_a_proj_with_mqa.weight": ("BF16", (80, 256)),
        "model.layers.2.self_attn.kv_a_proj_with_mqa.weight": ("BF16", (80, 256)),  # MTP: not loaded
    }
    write_model(str(tmp_path), config, tensors)
    estimate = estimate_vllm(read_local_model(str(tmp_path)), VllmOptions())
    assert estimate.weights_bytes == (256000 + 2 * 20480) * 2
    assert estimate.kv_bytes_per_token == 2 * 80 * 2 == 320
    assert estimate.kv_cache_bytes == 2 * 8192 * 160 + 2 * 16 * 160
    assert estimate.breakdown(4)["kv_cache"] == estimate.kv_cache_bytes  # replicated on every GPU


def test_sliding_window_layers_keep_the_window_plus_tokens_in_flight(tmp_path):
    config = llama_config(
        architectures=["Gemma3ForCausalLM"],
        model_type="gemma3_text",
        num_hidden_layers=6,
        num_key_value_heads=1,
        sliding_window=512,
        max_position_embeddings=32768,
    )
    write_model(str(tmp_path), config, llama_tensors(6, 256, 8, 1, 32, 512, 1000))
    estimate = estimate_vllm(read_local_model(str(tmp_path)), VllmOptions())
    per_layer_token = 2 * 1 * 32 * 2
    full = 1 * 8192 * per_layer_token
    # min(512 - 1 + 2 × 2048 in flight, 8192) = 4607 tokens → 288 blocks + 1 per sliding layer
    sliding = 5 * (288 + 1) * 16 * per_layer_token
    assert estimate.kv_cache_bytes == full + sliding + 6 * 16 * per_layer_token == 4_020_224


def test_unknown_architecture_falls_back_to_the_faq_rule(tmp_path):
    estimate = estimate_vllm(
        tiny(tmp_path, model_type="brand_new", architectures=["BrandNewLM"]), VllmOptions()
    )
    assert not estimate.architecture_known
    assert modelled(estimate, 1) == 6_582_068 + 2 * GiB  # ceil(5,485,056 × 1.2) + 2 GiB
    assert modelled(estimate, 2) == 3_291_034 + 2 * GiB
    assert "architecture not modelled" in estimate.describe()


def test_parse_forms_and_errors():
    options = parse_vllm_options(
        ["--gpu-memory-utilization=0.5", "--max-model-len 32k", "-tp", "2", "--max-num-seqs", "64"]
    )
    assert (options.gpu_memory_utilization, options.max_model_len) == (0.5, 32768)
    assert (options.tensor_parallel_size, options.max_num_seqs) == (2, 64)
    assert parse_vllm_options(["--enforce-eager", "--trust-remote-code"]).enforce_eager
    assert parse_vllm_options(["--some-unknown", "x", "--dtype", "half"]).dtype == "half"
    with pytest.raises(ValueError, match="--gpu-memory-utilization: invalid value '1.5'"):
        parse_vllm_options(["--gpu-memory-utilization=1.5"])
    with pytest.raises(ValueError, match="--max-model-len: invalid value 'lots'"):
        parse_vllm_options(["--max-model-len", "lots"])
    with pytest.raises(ValueError, match="--max-model-len needs a value"):
        parse_vllm_options(["--max-model-len"])
    with pytest.raises(ValueError, match="--kv-cache-dtype"):
        parse_vllm_options(["--kv-cache-dtype=int3"])


def test_lower_utilization_lets_a_partly_used_gpu_qualify(tmp_path):
    estimate = estimate_vllm(tiny(tmp_path), VllmOptions())
    half = parse_vllm_options(["--gpu-memory-utilization=0.5"])
    assert estimate.check_gpu(8 * GiB, 5 * GiB, 1, half) is None
    assert estimate.check_gpu(8 * GiB, 5 * GiB, 1, VllmOptions()) is not None


def test_report_is_json_ready(tmp_path):
    import json

    tiny_llama(str(tmp_path))
    report = estimate_safetensors_report(str(tmp_path), ["--max-model-len=2048"])
    assert json.loads(json.dumps(report)) == report
    assert report["max_model_len"] == 2048 and set(report["per_gpu_bytes"]) == {"1", "2", "4", "8"}
    assert report["faq_rule_bytes"] == 6_582_068 + 2 * GiB


def test_report_warns_when_max_model_len_exceeds_the_model(tmp_path):
    tiny_llama(str(tmp_path))
    report = estimate_safetensors_report(str(tmp_path), ["--max-model-len=8192"])
    (warning,) = report["warnings"]
    assert warning.startswith("--max-model-len 8192 exceeds the model's 4096: vLLM refuses it")


def test_a_16_bit_checkpoint_is_never_estimated_below_the_faqs_rule(tmp_path: Path) -> None:
    config = llama_config(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        max_position_embeddings=8192,
    )
    write_model(str(tmp_path), config, llama_tensors(32, 4096, 32, 8, 128, 14336, 128256), shards=4)
    estimate = estimate_vllm(read_local_model(str(tmp_path)), VllmOptions())
    rule = faq_rule_bytes(estimate.weights_bytes)
    assert modelled(estimate, 1) < rule  # the model alone would need less (17.2 GiB) ...
    assert estimate.per_gpu_bytes(1) == rule  # ... but BF16 is estimated at weights x 1.2 + 2 GiB at least
    assert estimate.breakdown(1)["faq_rule_floor"] == rule - modelled(estimate, 1)


def test_parallel_sizes_fix_the_device_count_only_when_given():
    options = parse_vllm_options(["-tp", "2", "--pipeline-parallel-size=2", "-dp", "2"])
    assert options.parallel_given and options.devices == 8
    assert parse_vllm_options(["--data-parallel-size", "4"]).devices == 4
    default = parse_vllm_options(["--max-model-len", "4096"])
    assert not default.parallel_given and default.devices == 1
