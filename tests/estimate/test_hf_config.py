"""config.json → the model shape the estimates use."""

from __future__ import annotations

from gpustack.estimate.hf_config import derived_max_model_len, parse_config, parse_quantization
from tests.estimate.fixtures.safetensors_models import llama_config


def test_llama_gqa_fields_and_kv_elements():
    arch = parse_config(llama_config())
    assert (arch.num_layers, arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim) == (
        4,
        8,
        2,
        32,
    )
    assert arch.known and not arch.is_mla and arch.max_model_len == 4096
    assert arch.kv_elements_per_token_per_layer(1) == 2 * 2 * 32
    assert arch.kv_elements_per_token_per_layer(2) == 2 * 1 * 32
    # more GPUs than KV heads: each GPU keeps a replica of one head
    assert arch.kv_elements_per_token_per_layer(8) == 2 * 1 * 32


def test_head_dim_defaults_to_hidden_over_heads():
    config = llama_config()
    del config["head_dim"]
    assert parse_config(config).head_dim == 256 // 8


def test_multimodal_reads_the_nested_text_config():
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "torch_dtype": "float16",
        "text_config": llama_config(num_hidden_layers=6, max_position_embeddings=32768),
        "vision_config": {"hidden_size": 64, "num_hidden_layers": 2},
    }
    arch = parse_config(config)
    assert arch.architecture == "LlavaForConditionalGeneration"
    assert arch.is_multimodal and arch.num_layers == 6 and arch.model_type == "llama"
    assert arch.max_model_len == 32768


def test_mla_uses_the_compressed_latent():
    config = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "kv_lora_rank": 64,
        "qk_rope_head_dim": 16, "qk_nope_head_dim": 32, "v_head_dim": 32, "vocab_size": 1000,
        "max_position_embeddings": 16384, "n_routed_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 128, "intermediate_size": 512,
    }  # fmt: skip
    arch = parse_config(config)
    assert arch.is_mla and arch.head_dim == 48 and arch.num_experts == 4
    # one latent of 64 + 16 per token and layer, the same on every GPU
    assert arch.kv_elements_per_token_per_layer(1) == 80 == arch.kv_elements_per_token_per_layer(4)


def test_sliding_window_layers_per_family():
    gemma3 = parse_config(llama_config(model_type="gemma3_text", num_hidden_layers=12, sliding_window=512))
    assert (gemma3.sliding_window, gemma3.sliding_layers) == (512, 10)  # every 6th layer is global
    gemma2 = parse_config(llama_config(model_type="gemma2", sliding_window=4096))
    assert gemma2.sliding_layers == 2
    typed = parse_config(
        llama_config(sliding_window=128, layer_types=["sliding_attention", "full_attention"] * 2)
    )
    assert typed.sliding_layers == 2
    qwen_off = parse_config(llama_config(model_type="qwen2", sliding_window=4096, use_sliding_window=False))
    assert qwen_off.sliding_window is None and qwen_off.sliding_layers == 0
    mistral = parse_config(llama_config(model_type="mistral", sliding_window=4096))
    assert mistral.sliding_layers == 4


def test_max_len_follows_vllm_rules():
    assert derived_max_model_len({"max_position_embeddings": 4096, "seq_length": 2048}) == 2048
    linear = {"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 4.0}}
    assert derived_max_model_len(linear) == 16384
    yarn = {"max_position_embeddings": 131072, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
    assert derived_max_model_len(yarn) == 131072  # already scaled
    assert derived_max_model_len({}) == 2048


def test_unknown_or_incomplete_configs_are_flagged_not_guessed():
    assert not parse_config(llama_config(model_type="my_new_arch")).known
    config = llama_config()
    del config["num_hidden_layers"]
    arch = parse_config(config)
    assert arch.missing == ("num_hidden_layers",) and not arch.known


def test_quantization_configs():
    gptq = parse_quantization({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}})
    assert gptq is not None and gptq.method == "gptq" and gptq.bytes_per_param == 0.5 + 2.5 / 128
    awq = parse_quantization({"quantization_config": {"quant_method": "awq", "w_bit": 4, "q_group_size": 64}})
    assert awq is not None and (awq.method, awq.bits, awq.group_size) == ("awq", 4.0, 64)
    bnb = parse_quantization({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}})
    assert bnb is not None and bnb.bytes_per_param == 0.5625
    fp8 = parse_quantization(
        {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
    )
    assert fp8 is not None and fp8.bits == 8 and fp8.bytes_per_param == 1 + 2 / (128 * 128)
    ct = {
        "quant_method": "compressed-tensors",
        "config_groups": {"g": {"weights": {"num_bits": 4, "group_size": 32}}},
    }
    parsed = parse_quantization({"quantization_config": ct})
    assert parsed is not None and (parsed.bits, parsed.group_size) == (4.0, 32)
    assert parse_quantization({}) is None


def qwen25_omni_config() -> dict:
    """Qwen2.5-Omni-7B's config.json: the language model two levels down, in thinker_config.text_config."""
    text = {
        "model_type": "qwen2_5_omni_text", "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "max_position_embeddings": 32768, "sliding_window": 32768, "use_sliding_window": False,
        "rope_theta": 1000000.0, "torch_dtype": "bfloat16",
    }  # fmt: skip
    return {
        "architectures": ["Qwen2_5OmniModel"],
        "model_type": "qwen2_5_omni",
        "enable_audio_output": True,
        "thinker_config": {
            "model_type": "qwen2_5_omni_thinker",
            "text_config": text,
            "audio_config": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20},
            "vision_config": {"hidden_size": 1280, "depth": 32, "num_heads": 16},
        },
        "talker_config": {"model_type": "qwen2_5_omni_talker", "hidden_size": 896, "num_attention_heads": 12},
        "token2wav_config": {"model_type": "qwen2_5_omni_token2wav"},
    }


def test_qwen25_omni_reads_the_text_model_inside_thinker_config():
    # Before: the top level has no heads, so any tensor parallel size passed the divisibility check.
    arch = parse_config(qwen25_omni_config())
    assert (arch.num_attention_heads, arch.num_key_value_heads, arch.num_layers) == (28, 4, 28)
    assert arch.hidden_size == 3584 and arch.max_model_len == 32768 and arch.is_multimodal
    assert arch.model_type == "qwen2_5_omni_text" and arch.known and arch.sliding_layers == 0
