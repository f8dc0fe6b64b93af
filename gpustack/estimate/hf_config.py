"""What a Hugging Face config.json says about a model's shape: layers, heads, KV layout, context, dtype."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Decoder-only architectures whose attention the KV formula below describes (vLLM model_type names).
# A model outside this set still gets an estimate, but from the FAQ's rule of thumb.
KNOWN_MODEL_TYPES = frozenset(
    {
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
        "gemma3", "gemma3_text", "phi3", "phimoe", "deepseek_v2", "deepseek_v3", "internlm2", "internlm3",
        "baichuan", "yi", "granite", "granitemoe", "olmo", "olmo2", "starcoder2", "cohere", "cohere2",
        "exaone", "stablelm", "minicpm", "glm", "glm4", "glm4_moe", "ernie4_5", "ernie4_5_moe", "smollm3",
        "qwen2_vl", "qwen2_5_vl", "llava", "mistral3", "gpt_oss", "qwen2_5_omni_text", "qwen2_5_omni_thinker",
    }
)  # fmt: skip

# config.json's torch_dtype (or dtype) → bytes per element.
DTYPE_BYTES = {
    "float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "fp8": 1, "int8": 1, "uint8": 1,
}  # fmt: skip

# The keys vLLM reads, smallest wins (vllm/transformers_utils/model_arch_config_convertor.py).
_MAX_LEN_KEYS = (
    "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
    "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len",
)  # fmt: skip
# RoPE types whose max_position_embeddings already includes the scaling (vLLM does not multiply them).
_PRESCALED_ROPE = frozenset({"su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling"})
_DEFAULT_MAX_LEN = 2048  # vLLM's assumption when config.json names no length


class ConfigError(ValueError):
    """A config.json that does not describe a model we can read; the message says what is missing."""


@dataclass(frozen=True)
class QuantizationConfig:
    """A checkpoint's quantization: its method and the bytes one quantized weight takes, scales included."""

    method: str
    bits: float
    group_size: int = 128

    @property
    def bytes_per_param(self) -> float:
        """Packed weight plus its per-group scale (and zero point), as the format stores them."""
        if self.method == "bitsandbytes":
            # 4-bit: packed nibbles + one fp32 absmax per 64 weights; 8-bit: int8 + one fp32 scale per row.
            return 0.5 + 4 / 64 if self.bits == 4 else 1.0
        per_group = 2 + (self.bits / 8 if self.method in ("gptq", "awq") else 0)  # fp16 scale (+ zero)
        return self.bits / 8 + (per_group / self.group_size if self.group_size > 0 else 0)


@dataclass(frozen=True)
class ModelArch:
    """The model's shape as the engines see it (the text model's, for multimodal checkpoints)."""

    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_model_len: int  # what vLLM derives from config.json (RoPE scaling included)
    torch_dtype: str
    sliding_window: int | None = None
    sliding_layers: int = 0  # layers that attend only within sliding_window
    kv_lora_rank: int | None = None  # multi-head latent attention (DeepSeek V2/V3): compressed KV
    qk_rope_head_dim: int = 0
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    tie_word_embeddings: bool = False
    is_multimodal: bool = False
    quantization: QuantizationConfig | None = None
    # Fields config.json lacked; any missing one makes the architecture unknown.
    missing: tuple[str, ...] = field(default=())

    @property
    def known(self) -> bool:
        return not self.missing and self.model_type in KNOWN_MODEL_TYPES

    @property
    def is_mla(self) -> bool:
        return bool(self.kv_lora_rank)

    @property
    def full_layers(self) -> int:
        return self.num_layers - self.sliding_layers

    def kv_elements_per_token_per_layer(self, tensor_parallel: int = 1) -> int:
        """K and V elements one token adds to one layer's cache on one GPU.

        MLA stores one latent vector (kv_lora_rank + rope dims) replicated on every GPU; ordinary
        attention stores K and V per KV head, split across GPUs (replicated when tp > KV heads).
        """
        if self.is_mla:
            return int(self.kv_lora_rank or 0) + self.qk_rope_head_dim
        heads = max(1, self.num_key_value_heads // max(1, tensor_parallel))
        return 2 * heads * self.head_dim


def _first(config: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return None


# Where multimodal checkpoints keep their language model's config, in the order vLLM and transformers look:
# Qwen2.5-Omni and Qwen3-Omni nest it twice (thinker_config.text_config); InternVL uses llm_config.
_NESTED_TEXT_KEYS = ("thinker_config", "text_config", "llm_config", "language_config")
_MAX_TEXT_NESTING = 4


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config, however deep a multimodal checkpoint nests it."""
    for _ in range(_MAX_TEXT_NESTING):
        for key in _NESTED_TEXT_KEYS:
            nested = config.get(key)
            if isinstance(nested, dict) and nested:
                config = nested
                break
        else:
            return config
    return config


def derived_max_model_len(config: dict[str, Any]) -> int:
    """The context length vLLM derives from config.json when --max-model-len is not given."""
    text = text_config(config)
    lengths = [int(text[k]) for k in _MAX_LEN_KEYS if isinstance(text.get(k), (int, float)) and text[k] > 0]
    if isinstance(text.get("model_max_length"), (int, float)) and text["model_max_length"] > 0:
        derived: float = int(text["model_max_length"])  # Command-R: this key wins outright
    else:
        derived = min(lengths) if lengths else _DEFAULT_MAX_LEN
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    rope = text.get("rope_scaling") or text.get("rope_parameters")
    if isinstance(rope, dict) and "gemma3" not in model_type:
        rope_type = rope.get("rope_type") or rope.get("type") or "default"
        factor = rope.get("factor")
        if rope_type not in _PRESCALED_ROPE and rope_type != "default" and isinstance(factor, (int, float)):
            derived *= factor
    return int(derived)


def _sliding_layers(text: dict[str, Any], model_type: str, num_layers: int) -> tuple[int | None, int]:
    """(window, number of sliding-window layers), following each family's convention in its config."""
    window = text.get("sliding_window")
    if not isinstance(window, int) or window <= 0:
        return None, 0
    layer_types = text.get("layer_types")
    if isinstance(layer_types, list) and layer_types:
        return window, sum(1 for t in layer_types[:num_layers] if t == "sliding_attention")
    if model_type in (
        "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen2_vl", "qwen2_5_vl", "qwen2_5_omni_text",
    ):  # fmt: skip
        if not text.get("use_sliding_window", False):
            return None, 0
        first = int(text.get("max_window_layers", num_layers))
        return window, max(0, num_layers - first)
    if model_type in ("gemma2", "cohere2"):
        return window, (num_layers + 1) // 2  # every other layer, starting with the first
    if model_type in ("gemma3", "gemma3_text"):
        pattern = int(text.get("sliding_window_pattern", 6))
        return window, sum(1 for i in range(num_layers) if (i + 1) % pattern != 0)
    return window, num_layers  # Mistral v0.1 style: every layer


def parse_quantization(config: dict[str, Any]) -> QuantizationConfig | None:
    """The quantization_config (or compression_config) of config.json, if the checkpoint has one."""
    quant = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(quant, dict):
        text = text_config(config)
        quant = text.get("quantization_config") if text is not config else None
        if not isinstance(quant, dict):
            return None
    method = str(quant.get("quant_method") or quant.get("format") or "").lower().replace("_", "-")
    if method in ("gptq", "awq", "gptq-marlin", "awq-marlin"):
        base = method.split("-")[0]
        bits = quant.get("bits", quant.get("w_bit")) or 4
        group = quant.get("group_size", quant.get("q_group_size")) or 128
        return QuantizationConfig(base, float(bits), int(group))
    if method == "bitsandbytes":
        return QuantizationConfig("bitsandbytes", 8.0 if quant.get("load_in_8bit") else 4.0, 64)
    if method in ("fp8", "fbgemm-fp8", "modelopt"):
        block = quant.get("weight_block_size")
        group = int(block[0]) * int(block[1]) if isinstance(block, list) and len(block) == 2 else 0
        return QuantizationConfig("fp8", 8.0, group)
    if method in (
        "compressed-tensors",
        "pack-quantized",
        "float-quantized",
        "int-quantized",
        "naive-quantized",
    ):
        ct_bits, ct_group = 8.0, 0
        for group_cfg in (quant.get("config_groups") or {}).values():
            weights = group_cfg.get("weights") if isinstance(group_cfg, dict) else None
            if isinstance(weights, dict):
                ct_bits = float(weights.get("num_bits", ct_bits))
                ct_group = int(weights.get("group_size") or 0)
                break
        return QuantizationConfig("compressed-tensors", ct_bits, ct_group)
    if method == "mxfp4":
        return QuantizationConfig("mxfp4", 4.0, 32)
    if method:
        return QuantizationConfig(method, 16.0, 0)
    return None


def parse_config(config: dict[str, Any]) -> ModelArch:
    """Read the fields the estimates need; absent essentials are listed in `missing`, never guessed."""
    if not isinstance(config, dict):
        raise ConfigError("config.json is not a JSON object")
    text = text_config(config)
    architectures = config.get("architectures") or text.get("architectures") or []
    architecture = str(architectures[0]) if architectures else str(config.get("model_type", "unknown"))
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    missing: list[str] = []

    def need(*keys: str) -> int:
        value = _first(text, *keys)
        if not isinstance(value, (int, float)) or value <= 0:
            missing.append(keys[0])
            return 0
        return int(value)

    num_layers = need("num_hidden_layers", "n_layer", "num_layers", "n_layers")
    hidden = need("hidden_size", "n_embd", "d_model")
    heads = need("num_attention_heads", "n_head", "num_heads")
    kv_heads_value = _first(text, "num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num")
    kv_heads = (
        int(kv_heads_value) if isinstance(kv_heads_value, (int, float)) and kv_heads_value > 0 else heads
    )
    head_dim_value = _first(text, "head_dim", "hidden_size_per_head")
    if isinstance(head_dim_value, int) and head_dim_value > 0:
        head_dim = head_dim_value
    elif isinstance(text.get("qk_nope_head_dim"), int):  # MLA: query/key width per head
        head_dim = int(text["qk_nope_head_dim"]) + int(text.get("qk_rope_head_dim") or 0)
    else:
        head_dim = hidden // heads if heads else 0
    intermediate = int(_first(text, "intermediate_size", "n_inner", "ffn_hidden_size") or 4 * hidden)
    vocab = int(_first(text, "vocab_size", "padded_vocab_size") or config.get("vocab_size") or 0)
    dtype = str(_first(text, "torch_dtype", "dtype") or _first(config, "torch_dtype", "dtype") or "bfloat16")
    window, sliding = _sliding_layers(text, model_type, num_layers)
    kv_lora_rank = text.get("kv_lora_rank") if isinstance(text.get("kv_lora_rank"), int) else None
    num_experts = int(_first(text, "num_local_experts", "num_experts", "n_routed_experts") or 0)
    return ModelArch(
        architecture=architecture,
        model_type=model_type,
        num_layers=num_layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_model_len=derived_max_model_len(config),
        torch_dtype=dtype,
        sliding_window=window,
        sliding_layers=sliding,
        kv_lora_rank=kv_lora_rank or None,
        qk_rope_head_dim=int(text.get("qk_rope_head_dim") or 0) if kv_lora_rank else 0,
        num_experts=num_experts,
        num_experts_per_tok=int(_first(text, "num_experts_per_tok", "moe_topk", "top_k") or 0)
        if num_experts
        else 0,
        moe_intermediate_size=int(_first(text, "moe_intermediate_size", "expert_intermediate_size") or 0)
        or (intermediate if num_experts else 0),
        tie_word_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        is_multimodal=text is not config,
        quantization=parse_quantization(config),
        missing=tuple(missing),
    )
