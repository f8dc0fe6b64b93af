"""The shape of a GGUF model as llama.cpp sees it: per-layer attention, state and weight sizes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpustack.estimate.gguf import GGUFError, GGUFHeader

# Architectures whose every layer keeps a recurrent state instead of a KV cache (llm_arch_is_recurrent).
RECURRENT_ARCHITECTURES = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
# Encoders that llama.cpp runs without any KV cache (llama_model::create_memory returns none for them).
ENCODER_ARCHITECTURES = frozenset(
    {
        "bert",
        "modern-bert",
        "nomic-bert",
        "nomic-bert-moe",
        "neo-bert",
        "jina-bert-v2",
        "jina-bert-v3",
        "eurobert",
        "gemma-embedding",
    }
)
# Architectures whose graph ends with the hidden states: no LM head, so no logits (src/models/*.cpp).
NO_LM_HEAD_ARCHITECTURES = ENCODER_ARCHITECTURES | {"llama-embed", "t5encoder"}

# Sliding-window layout llama.cpp uses when the file has no sliding_window_pattern:
# (every n-th layer is full attention, full layer comes first, window when the file gives none)
_SWA_PATTERNS: dict[str, tuple[int, bool, int]] = {
    "gemma2": (2, False, 4096),
    "gemma3": (6, False, 0),
    "gemma3n": (5, False, 0),
    "cohere2": (4, False, 0),
    "cohere2moe": (4, True, 0),
    "exaone4": (4, False, 4096),
    "olmo2": (4, False, 0),
    "gpt-oss": (2, False, 0),
    "llama4": (4, False, 8192),  # chunked attention, sized like a window
    "smallthinker": (4, True, 4096),
    "afmoe": (4, False, 0),
    "mellum": (4, False, 0),
    "plamo3": (8, False, 0),
}
# Architectures that read a sliding window from the file but run every layer with full attention.
_SWA_IGNORED = frozenset({"phi3"})

_LAYER_NAME = re.compile(r"^blk\.(\d+)\.")
_INPUT_TENSORS = ("token_embd", "pos_embd", "position_embd", "token_types", "per_layer_token_embd")
_RECURRENT_TENSORS = (".ssm_", ".time_mix_", ".shortconv")
_ATTENTION_TENSORS = (".attn_q", ".attn_k", ".attn_v", ".attn_qkv", ".attn_kv")


@dataclass
class ModelShape:
    """Hyperparameters of a model that decide llama.cpp's buffers (one entry per layer where they vary)."""

    architecture: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    n_head: list[int]
    n_head_kv: list[int]  # 0 for a layer without attention
    key_length: int
    value_length: int
    n_ff: int  # widest feed-forward activation (experts in use, for MoE)
    n_swa: int  # sliding window in tokens; 0 = none
    swa_layers: list[bool]
    state_floats: list[int]  # recurrent state per sequence (f32 elements); 0 for attention layers
    layer_bytes: list[int]  # weights of each repeating layer
    input_bytes: int  # token embeddings and friends: llama.cpp keeps these on the CPU
    output_bytes: int  # output norm and head, plus anything not in a layer
    tied_output: bool  # no output.weight: the head reuses token_embd (a copy goes to the output device)
    token_embd_bytes: int
    kv_cache: bool = True  # False for encoders: llama.cpp keeps no cache, each batch attends to itself
    lm_head: bool = True  # False where the graph stops at the hidden states (embedding models)

    @property
    def weights_bytes(self) -> int:
        return sum(self.layer_bytes) + self.input_bytes + self.output_bytes


def _per_layer(value: Any, n_layer: int, default: int, what: str, path: str) -> list[int]:
    if value is None:
        return [default] * n_layer
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = [int(v) for v in value]
        if len(items) < n_layer:
            raise GGUFError(f"{path}: {what} lists {len(items)} layers, the model has {n_layer}")
        return items[:n_layer]
    return [int(value)] * n_layer


def _max_int(value: Any) -> int:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return max((int(v) for v in value), default=0)
    return int(value or 0)


def _swa_layout(header: GGUFHeader, n_layer: int) -> tuple[int, list[bool]]:
    arch = header.architecture
    n_swa = int(header.arch_value("attention.sliding_window", 0) or 0)
    pattern_value = header.arch_value("attention.sliding_window_pattern")
    if arch in _SWA_IGNORED:
        return 0, [False] * n_layer
    if isinstance(pattern_value, Sequence) and not isinstance(pattern_value, str):
        layers = [bool(v) for v in list(pattern_value)[:n_layer]]
        layers += [False] * (n_layer - len(layers))
        return (n_swa, layers) if n_swa and any(layers) else (0, [False] * n_layer)
    known = _SWA_PATTERNS.get(arch)
    if known is None:
        return 0, [False] * n_layer
    n_pattern, dense_first, default_window = known
    n_swa = n_swa or default_window
    if pattern_value is not None:
        n_pattern = int(pattern_value)
    if not n_swa:
        return 0, [False] * n_layer
    if dense_first:
        layers = [n_pattern == 0 or il % n_pattern != 0 for il in range(n_layer)]
    else:
        layers = [n_pattern == 0 or il % n_pattern < n_pattern - 1 for il in range(n_layer)]
    return n_swa, layers


def _recurrent_state_floats(header: GGUFHeader) -> int:
    """f32 elements of one sequence's state in one recurrent layer (llama_hparams::n_embd_r + n_embd_s)."""
    n_embd = int(header.arch_value("embedding_length", 0) or 0)
    wkv_head_size = int(header.arch_value("wkv.head_size", 0) or 0)
    if wkv_head_size:  # RWKV
        token_shift = int(header.arch_value("token_shift_count", 2) or 2)
        return token_shift * n_embd + n_embd * wkv_head_size
    l_cache = int(header.arch_value("shortconv.l_cache", 0) or 0)
    if l_cache:  # LFM2 short convolutions
        return n_embd * (l_cache - 1)
    d_conv = int(header.arch_value("ssm.conv_kernel", 0) or 0)
    d_inner = int(header.arch_value("ssm.inner_size", 0) or 0)
    d_state = int(header.arch_value("ssm.state_size", 0) or 0)
    n_group = int(header.arch_value("ssm.group_count", 0) or 0)
    return max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state) + d_state * d_inner


def _vocab_size(header: GGUFHeader, token_embd_shape: tuple[int, ...] | None) -> int:
    tokens = header.get("tokenizer.ggml.tokens")
    if tokens is not None:
        return len(tokens)
    if header.arch_value("vocab_size") is not None:
        return int(header.arch_value("vocab_size"))
    return token_embd_shape[1] if token_embd_shape and len(token_embd_shape) > 1 else 0


def model_shape(header: GGUFHeader, shards: list[GGUFHeader] | None = None) -> ModelShape:
    """Read a model's shape from its first header; tensors are summed over every shard given."""
    arch = header.architecture
    if not arch:
        raise GGUFError(f"{header.path}: general.architecture is missing")
    n_layer = header.arch_value("block_count")
    n_embd = header.arch_value("embedding_length")
    if n_layer is None or n_embd is None:
        raise GGUFError(f"{header.path}: {arch}.block_count or {arch}.embedding_length is missing")
    n_layer, n_embd = int(n_layer), int(n_embd)

    headers = [header] + [s for s in shards or [] if s.path != header.path]
    layer_bytes = [0] * n_layer
    has_attention = [False] * n_layer
    has_state = [False] * n_layer
    input_bytes = output_bytes = token_embd_bytes = 0
    token_embd_shape: tuple[int, ...] | None = None
    has_output = False
    for part in headers:
        for tensor in part.tensors:
            match = _LAYER_NAME.match(tensor.name)
            if match and int(match.group(1)) < n_layer:
                il = int(match.group(1))
                layer_bytes[il] += tensor.n_bytes
                has_attention[il] |= any(k in tensor.name for k in _ATTENTION_TENSORS)
                has_state[il] |= any(k in tensor.name for k in _RECURRENT_TENSORS)
            elif tensor.name.startswith(_INPUT_TENSORS):
                input_bytes += tensor.n_bytes
                if tensor.name == "token_embd.weight":
                    token_embd_bytes, token_embd_shape = tensor.n_bytes, tensor.shape
            else:
                output_bytes += tensor.n_bytes
                has_output |= tensor.name == "output.weight"

    head_value = header.arch_value("attention.head_count", 0)
    n_head = _per_layer(head_value, n_layer, 0, f"{arch}.attention.head_count", header.path)
    kv_value = header.arch_value("attention.head_count_kv")
    n_head_kv = _per_layer(
        kv_value if kv_value is not None else head_value,
        n_layer,
        0,
        f"{arch}.attention.head_count_kv",
        header.path,
    )
    first_head = max(n_head, default=0) or 1
    key_length = int(
        header.arch_value("attention.key_length_mla")
        or header.arch_value("attention.key_length")
        or n_embd // first_head
    )
    value_length = int(
        header.arch_value("attention.value_length_mla")
        or header.arch_value("attention.value_length")
        or n_embd // first_head
    )
    if header.arch_value("attention.key_length_mla"):  # MLA caches one compressed "head" per token
        n_head_kv = [1 if h else 0 for h in n_head_kv]

    state = _recurrent_state_floats(header)
    if arch in RECURRENT_ARCHITECTURES:
        recurrent = [True] * n_layer
        n_head_kv = [0] * n_layer
    elif state and any(has_state):  # hybrid: the layers holding ssm / time-mix / conv tensors
        recurrent = has_state
        layers = zip(n_head_kv, has_attention, has_state, strict=True)
        n_head_kv = [kv if attn or not rec else 0 for kv, attn, rec in layers]
    else:
        recurrent = [False] * n_layer

    n_ff = _max_int(header.arch_value("feed_forward_length", 0))
    n_ff_expert = _max_int(header.arch_value("expert_feed_forward_length", 0))
    n_expert_used = int(header.arch_value("expert_used_count", 0) or 0)
    n_swa, swa_layers = _swa_layout(header, n_layer)
    return ModelShape(
        architecture=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=_vocab_size(header, token_embd_shape),
        n_ctx_train=int(header.arch_value("context_length", 0) or 0),
        n_head=n_head,
        n_head_kv=n_head_kv,
        key_length=key_length,
        value_length=value_length,
        n_ff=max(n_ff, n_ff_expert * n_expert_used),
        n_swa=n_swa,
        swa_layers=swa_layers,
        state_floats=[state if rec else 0 for rec in recurrent],
        layer_bytes=layer_bytes,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        tied_output=not has_output and arch not in NO_LM_HEAD_ARCHITECTURES,
        token_embd_bytes=token_embd_bytes,
        kv_cache=arch not in ENCODER_ARCHITECTURES,
        lm_head=arch not in NO_LM_HEAD_ARCHITECTURES,
    )
