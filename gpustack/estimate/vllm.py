"""GPU memory a vLLM instance of a safetensors model needs, modelled on how vLLM sizes itself at startup.

vLLM (v1 engine, gpu_worker.determine_available_memory) claims `--gpu-memory-utilization` × total
memory on each GPU and refuses to start unless that much is free. Inside that budget it keeps the
weights, the activation peak of one profile forward pass over max_num_batched_tokens tokens plus a
sampler pass over max_num_seqs rows, non-torch buffers and (since v0.21, unless --enforce-eager) the
CUDA graph pool; everything left becomes KV cache, which must hold at least one --max-model-len
sequence (kv_cache_utils.check_enough_kv_cache_memory). The CUDA context and NCCL are created before
that snapshot, so they live in the remaining (1 − utilization) share.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gpustack.estimate.hf_config import ModelArch, parse_config
from gpustack.estimate.safetensors import ModelFiles, loaded_weights, model_dtype_bytes, read_local_model

GiB = 1 << 30
MiB = 1 << 20
DEFAULT_MAX_MODEL_LEN = 8192  # GPUStack's default when the model allows more (FAQ)
FAQ_FACTOR = 1.2  # FAQ: GPU memory (GB) = weights (GB) × 1.2 + 2
FAQ_EXTRA = 2 * GiB
# Non-torch memory and runtime buffers vLLM's profiler counts inside the budget: cuBLAS/attention
# workspaces, the model runner's persistent input buffers, allocator slack.
RUNTIME_BYTES = 384 * MiB
# The CUDA graph pool vLLM profiles into the budget since v0.21 (off with --enforce-eager); an empirical
# fit of the 0.3-1 GiB "Graph capturing finished ... took X GiB" figures, growing with depth.
CUDA_GRAPH_BASE = 128 * MiB
CUDA_GRAPH_PER_LAYER = 12 * MiB
SAMPLER_BYTES_PER_LOGIT = 12  # fp32 logits, probabilities and sampling noise per (sequence, vocab entry)
_FLOAT_KV = {"auto": 0, "bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}


def fmt_gib(n: float) -> str:
    """Bytes for a person: GiB with one decimal, MiB below 1 GiB."""
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def faq_rule_bytes(weights_bytes: int) -> int:
    """The FAQ's rule of thumb for a BF16 safetensors model: weights × 1.2 + 2 GiB."""
    return math.ceil(weights_bytes * FAQ_FACTOR) + FAQ_EXTRA


# --- options ---------------------------------------------------------------------------------------------


@dataclass
class VllmOptions:
    """The vLLM flags that change memory use; defaults are GPUStack's (FAQ) and vLLM's."""

    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None  # None → min(8192, the model's own)
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    kv_cache_dtype: str = "auto"
    enforce_eager: bool = False
    max_num_seqs: int | None = None  # None → vLLM's default for the GPU: 256, 1024 on GPUs of 70 GiB+
    max_num_batched_tokens: int | None = None  # None → 2048, 8192 on 70 GiB+, 16384 on 160 GiB+
    dtype: str = "auto"
    quantization: str | None = None
    block_size: int = 16
    kv_cache_memory_bytes: int | None = None
    enable_chunked_prefill: bool = True
    data_parallel_size: int = 1  # DP ranks, each a full tensor x pipeline parallel group
    parallel_given: bool = False  # the user set -tp, -pp or -dp: the device count is theirs

    @property
    def devices(self) -> int:
        """GPUs one instance spans: tensor x pipeline parallel size, times the data parallel ranks."""
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size


PARALLEL_FLAGS = frozenset(
    {
        "--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp", "--data-parallel-size", "-dp",
    }
)  # fmt: skip


def _size(text: str) -> int:
    """An integer with an optional k/m/g suffix as vLLM accepts ("32k", "1m", "2G", "2GiB")."""
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    if value and value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    return int(value)


def parse_positive_int(text: str) -> int:
    value = _size(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def parse_fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError("must be in (0, 1]")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("must be true or false")


def split_parameters(backend_parameters: list[str]) -> list[tuple[str, str | None]]:
    """Backend parameters as (flag, value) pairs: accepts "--x=y", "--x y" and ["--x", "y"]."""
    tokens: list[str] = []
    for item in backend_parameters:
        for word in shlex.split(item) if " " in item.strip() else [item.strip()]:
            if word.startswith("-") and "=" in word:
                flag, _, value = word.partition("=")
                tokens += [flag, value]
            elif word:
                tokens.append(word)
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(tokens):
        nxt: str | None = tokens[i + 1] if i + 1 < len(tokens) else None
        if nxt is not None and nxt.startswith("-") and not _looks_numeric(nxt):
            nxt = None
        pairs.append((tokens[i], nxt))
        i += 2 if nxt is not None else 1
    return pairs


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_flags(
    backend_parameters: list[str],
    valued: dict[str, tuple[str, Callable[[str], Any]]],
    switches: dict[str, tuple[str, bool]],
    target: Any,
) -> None:
    """Set target's attributes from flags; a bad or missing value is a ValueError naming the flag."""
    for flag, value in split_parameters(backend_parameters):
        if flag in switches:
            attr, on = switches[flag]
            setattr(target, attr, on if value is None else (on == _bool(value)))
        elif flag in valued:
            attr, convert = valued[flag]
            if value is None:
                raise ValueError(f"{flag} needs a value")
            try:
                setattr(target, attr, convert(value))
            except (ValueError, ArithmeticError) as exc:  # ArithmeticError: 1e400k, too large to hold
                raise ValueError(f"{flag}: invalid value {value!r} ({exc})") from None


def _kv_dtype(text: str) -> str:
    lowered = text.lower()
    if lowered in _FLOAT_KV or lowered.startswith("fp8"):
        return lowered
    raise ValueError("expected auto, bfloat16, float16 or fp8*")


_VLLM_VALUED: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--gpu-memory-utilization": ("gpu_memory_utilization", parse_fraction),
    "--max-model-len": ("max_model_len", parse_positive_int),
    "--tensor-parallel-size": ("tensor_parallel_size", parse_positive_int),
    "-tp": ("tensor_parallel_size", parse_positive_int),
    "--pipeline-parallel-size": ("pipeline_parallel_size", parse_positive_int),
    "-pp": ("pipeline_parallel_size", parse_positive_int),
    "--data-parallel-size": ("data_parallel_size", parse_positive_int),
    "-dp": ("data_parallel_size", parse_positive_int),
    "--kv-cache-dtype": ("kv_cache_dtype", _kv_dtype),
    "--max-num-seqs": ("max_num_seqs", parse_positive_int),
    "--max-num-batched-tokens": ("max_num_batched_tokens", parse_positive_int),
    "--dtype": ("dtype", str.lower),
    "--quantization": ("quantization", str.lower),
    "-q": ("quantization", str.lower),
    "--block-size": ("block_size", parse_positive_int),
    "--kv-cache-memory-bytes": ("kv_cache_memory_bytes", parse_positive_int),
}
_VLLM_SWITCHES = {
    "--enforce-eager": ("enforce_eager", True),
    "--no-enforce-eager": ("enforce_eager", False),
    "--enable-chunked-prefill": ("enable_chunked_prefill", True),
    "--no-enable-chunked-prefill": ("enable_chunked_prefill", False),
}


def parse_vllm_options(backend_parameters: list[str]) -> VllmOptions:
    options = VllmOptions()
    parse_flags(backend_parameters, _VLLM_VALUED, _VLLM_SWITCHES, options)
    options.parallel_given = parallel_flags_given(backend_parameters)
    return options


def parallel_flags_given(backend_parameters: list[str]) -> bool:
    return any(flag in PARALLEL_FLAGS for flag, _ in split_parameters(backend_parameters))


def batch_defaults(gpu_total: int | None) -> tuple[int, int]:
    """vLLM's (max_num_batched_tokens, max_num_seqs) for its OpenAI server on a GPU of that size."""
    if gpu_total is not None and gpu_total >= 160 * GiB:
        return 16384, 1024
    if gpu_total is not None and gpu_total >= 70 * GiB:
        return 8192, 1024
    return 2048, 256


# --- the memory model ------------------------------------------------------------------------------------


def kv_cache_bytes(
    arch: ModelArch,
    elem_bytes: int,
    max_len: int,
    tensor_parallel: int,
    pipeline_parallel: int,
    block_size: int,
    in_flight_tokens: int,
) -> int:
    """KV cache one GPU needs to hold one max_len sequence, plus the block vLLM keeps back (null block).

    Full-attention layers keep every token; sliding-window layers keep the window plus the tokens in
    flight (SlidingWindowSpec.max_memory_usage_bytes).
    """
    per_layer_token = arch.kv_elements_per_token_per_layer(tensor_parallel) * elem_bytes
    pp = max(1, pipeline_parallel)
    full_layers = math.ceil(arch.full_layers / pp)
    sliding_layers = math.ceil(arch.sliding_layers / pp)
    full_blocks = math.ceil(max_len / block_size)
    total = full_layers * full_blocks * block_size * per_layer_token
    if sliding_layers and arch.sliding_window:
        tokens = min(arch.sliding_window - 1 + in_flight_tokens, max_len)
        total += sliding_layers * (math.ceil(tokens / block_size) + 1) * block_size * per_layer_token
    null_block = (full_layers + sliding_layers) * block_size * per_layer_token
    return total + null_block


def activation_bytes(arch: ModelArch, elem_bytes: int, tokens: int, seqs: int, tensor_parallel: int) -> int:
    """Torch peak of vLLM's profile run on one GPU: a forward pass over `tokens`, then the sampler.

    Forward: the residual stream (embeddings, residual, hidden, normed: replicated across TP) plus the
    larger of the attention projections and the MLP (gate+up and activation, or the fused-MoE caches
    per routed expert), split across TP. Sampler: fp32 logits, probabilities and noise over the vocabulary
    for `seqs` rows.
    """
    tp = max(1, tensor_parallel)
    hidden = arch.hidden_size
    stream = 4 * tokens * hidden * elem_bytes
    q_width = arch.num_attention_heads * arch.head_dim
    kv_width = 2 * max(1, arch.num_key_value_heads // tp) * arch.head_dim * tp
    attention = tokens * (2 * q_width + kv_width) * elem_bytes // tp
    if arch.num_experts and arch.num_experts_per_tok:
        routed = tokens * arch.num_experts_per_tok * (3 * arch.moe_intermediate_size // tp + hidden)
        mlp = routed * elem_bytes + tokens * arch.num_experts * 4
    else:
        mlp = tokens * 3 * arch.intermediate_size * elem_bytes // tp
    forward = stream + max(attention, mlp)
    sampler = seqs * arch.vocab_size * SAMPLER_BYTES_PER_LOGIT + seqs * hidden * elem_bytes
    return max(forward, sampler)


def runtime_bytes(arch: ModelArch, enforce_eager: bool, pipeline_parallel: int = 1) -> int:
    """Non-torch buffers plus the CUDA graph pool, both inside vLLM's budget."""
    if enforce_eager:
        return RUNTIME_BYTES
    layers = math.ceil(arch.num_layers / max(1, pipeline_parallel))
    return RUNTIME_BYTES + CUDA_GRAPH_BASE + CUDA_GRAPH_PER_LAYER * layers


def kv_elem_bytes(kv_cache_dtype: str, model_elem_bytes: int) -> int:
    if kv_cache_dtype.startswith("fp8"):
        return 1
    return _FLOAT_KV.get(kv_cache_dtype, 0) or model_elem_bytes


@dataclass
class VllmEstimate:
    """What one vLLM instance of a model needs, per GPU, for given options."""

    weights_bytes: int
    kv_bytes_per_token: int  # all layers, one GPU at the estimate's tensor parallel size
    max_model_len: int
    activation_bytes: int
    overhead_bytes: int
    num_attention_heads: int
    num_key_value_heads: int
    architecture: str
    architecture_known: bool
    kv_cache_bytes: int = 0  # KV for one max_model_len sequence at the estimate's parallelism
    parameters: int = 0
    model_max_len: int = 0  # the context the model itself supports
    options: VllmOptions = field(default_factory=VllmOptions, repr=False)
    arch: ModelArch | None = field(default=None, repr=False)
    dtype_bytes: int = 2

    def _parallel(self, tensor_parallel: int | None, pipeline_parallel: int | None) -> tuple[int, int]:
        tp = max(1, tensor_parallel or self.options.tensor_parallel_size)
        pp = max(1, pipeline_parallel or self.options.pipeline_parallel_size)
        return tp, pp

    def breakdown(
        self, tensor_parallel: int, pipeline_parallel: int | None = None, gpu_total: int | None = None
    ) -> dict[str, int]:
        """Per-GPU bytes by part: weights, kv_cache, activations, runtime (or faq_rule when unknown)."""
        tp, pp = self._parallel(tensor_parallel, pipeline_parallel)
        arch = self.arch
        if not self.architecture_known or arch is None:
            return {"weights": math.ceil(self.weights_bytes * FAQ_FACTOR / (tp * pp)), "runtime": FAQ_EXTRA}
        default_tokens, default_seqs = batch_defaults(gpu_total)
        seqs = self.options.max_num_seqs or default_seqs
        tokens = self.options.max_num_batched_tokens or default_tokens
        if not self.options.enable_chunked_prefill:
            tokens = max(tokens, self.max_model_len)
        tokens = min(tokens, seqs * self.max_model_len)
        kv_elem = kv_elem_bytes(self.options.kv_cache_dtype, self.dtype_bytes)
        in_flight = tokens * (2 if pp == 1 else pp)
        kv = kv_cache_bytes(arch, kv_elem, self.max_model_len, tp, pp, self.options.block_size, in_flight)
        if self.options.kv_cache_memory_bytes:
            kv = max(kv, self.options.kv_cache_memory_bytes)
        parts = {
            "weights": math.ceil(self.weights_bytes / (tp * pp)),
            "kv_cache": kv,
            "activations": activation_bytes(arch, self.dtype_bytes, tokens, min(seqs, tokens), tp),
            "runtime": runtime_bytes(arch, self.options.enforce_eager, pp),
        }
        if self._sixteen_bit():
            # DESIGN.md's contract: a BF16/FP16 checkpoint is estimated at no less than the FAQ's rule.
            floor = math.ceil(self.weights_bytes * FAQ_FACTOR / (tp * pp)) + FAQ_EXTRA
            if sum(parts.values()) < floor:
                parts["faq_rule_floor"] = floor - sum(parts.values())
        return parts

    def _sixteen_bit(self) -> bool:
        arch = self.arch
        quantized = (arch is not None and arch.quantization is not None) or bool(self.options.quantization)
        return self.dtype_bytes == 2 and not quantized

    def per_gpu_bytes(
        self, tensor_parallel: int, pipeline_parallel: int | None = None, gpu_total: int | None = None
    ) -> int:
        """What each GPU must hold at least, inside vLLM's --gpu-memory-utilization share."""
        return sum(self.breakdown(tensor_parallel, pipeline_parallel, gpu_total).values())

    def check_gpu(
        self, total: int, allocatable: int, tensor_parallel: int, options: VllmOptions
    ) -> str | None:
        """None if a GPU of `total` bytes with `allocatable` free qualifies, else why not."""
        utilization = options.gpu_memory_utilization
        budget = int(total * utilization)
        if allocatable < budget:
            return (
                f"needs {utilization:.0%} of {fmt_gib(total)} ({fmt_gib(budget)}) allocatable,"
                f" has {fmt_gib(allocatable)}"
            )
        parts = self.breakdown(tensor_parallel, options.pipeline_parallel_size, total)
        need = sum(parts.values())
        if need > budget:
            detail = ", ".join(f"{name.replace('_', ' ')} {fmt_gib(v)}" for name, v in parts.items())
            return (
                f"needs {fmt_gib(need)} within the {fmt_gib(budget)} vLLM may use"
                f" (--gpu-memory-utilization {utilization:g}): {detail}"
            )
        return None

    def describe(self) -> str:
        tp = self.options.tensor_parallel_size
        if not self.architecture_known:
            return (
                f"vLLM, {self.architecture} (architecture not modelled):"
                f" weights {fmt_gib(self.weights_bytes)};"
                f" FAQ rule weights x 1.2 + 2 GiB = {fmt_gib(faq_rule_bytes(self.weights_bytes))}"
                f" ({fmt_gib(self.per_gpu_bytes(tp))} per GPU at tensor parallel {tp})"
            )
        return (
            f"vLLM, {self.architecture}: weights {fmt_gib(self.weights_bytes)};"
            f" KV cache {self.kv_bytes_per_token / 1024:.1f} KiB/token,"
            f" {fmt_gib(self.kv_cache_bytes)} for --max-model-len {self.max_model_len};"
            f" activations {fmt_gib(self.activation_bytes)}; runtime {fmt_gib(self.overhead_bytes)};"
            f" {fmt_gib(self.per_gpu_bytes(tp))} per GPU at tensor parallel {tp}"
            f" (needs a GPU of {fmt_gib(self.per_gpu_bytes(tp) / self.options.gpu_memory_utilization)}"
            f" at --gpu-memory-utilization {self.options.gpu_memory_utilization:g})"
        )


class _Summarized(Protocol):
    kv_cache_bytes: int
    activation_bytes: int
    overhead_bytes: int

    def breakdown(self, tensor_parallel: int) -> dict[str, int]: ...


E = TypeVar("E", bound=_Summarized)


def with_breakdown(estimate: E, tensor_parallel: int) -> E:
    """Fill the summary figures of a vLLM or MindIE estimate from its per-GPU breakdown."""
    parts = estimate.breakdown(tensor_parallel)
    estimate.kv_cache_bytes = parts.get("kv_cache", 0)
    estimate.activation_bytes = parts.get("activations", 0)
    estimate.overhead_bytes = parts["runtime"]
    return estimate


def resolve_max_len(requested: int | None, arch: ModelArch, default: int = DEFAULT_MAX_MODEL_LEN) -> int:
    """--max-model-len / --max-seq-len as given, else GPUStack's default capped by the model's own."""
    if requested:
        return requested
    return min(default, arch.max_model_len) if arch.max_model_len else default


def estimate_vllm(model: ModelFiles, options: VllmOptions) -> VllmEstimate:
    arch = parse_config(model.config)
    weights = loaded_weights(model, arch, options.dtype, options.quantization)
    dtype_bytes = model_dtype_bytes(arch, options.dtype)
    max_len = resolve_max_len(options.max_model_len, arch)
    tp = max(1, options.tensor_parallel_size)
    kv_elem = kv_elem_bytes(options.kv_cache_dtype, dtype_bytes)
    estimate = VllmEstimate(
        weights_bytes=weights.bytes,
        kv_bytes_per_token=arch.num_layers * arch.kv_elements_per_token_per_layer(tp) * kv_elem,
        max_model_len=max_len,
        activation_bytes=0,
        overhead_bytes=0,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        architecture=arch.architecture,
        architecture_known=arch.known,
        parameters=weights.parameters,
        model_max_len=arch.max_model_len,
        options=options,
        arch=arch,
        dtype_bytes=dtype_bytes,
    )
    return with_breakdown(estimate, tp)


def safetensors_report(model: ModelFiles, options: VllmOptions) -> dict[str, Any]:
    """A JSON-able summary of the vLLM estimate, for `gpustack estimate` and programs."""
    estimate = estimate_vllm(model, options)
    arch = estimate.arch
    per_gpu = {str(tp): estimate.per_gpu_bytes(tp) for tp in (1, 2, 4, 8)}
    warnings = []
    if estimate.model_max_len and estimate.max_model_len > estimate.model_max_len:
        warnings.append(
            f"--max-model-len {estimate.max_model_len} exceeds the model's {estimate.model_max_len}:"
            " vLLM refuses it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1"
        )
    if not estimate.architecture_known:
        warnings.append("architecture not modelled: the figure is the FAQ's weights x 1.2 + 2 GiB")
    return {
        "source": model.source,
        "backend": "vllm",
        "architecture": estimate.architecture,
        "architecture_known": estimate.architecture_known,
        "model_type": arch.model_type if arch else "",
        "parameters": estimate.parameters,
        "stored_bytes": model.total_bytes,
        "weights_bytes": estimate.weights_bytes,
        "dtype_bytes": estimate.dtype_bytes,
        "quantization": arch.quantization.method if arch and arch.quantization else options.quantization,
        "max_model_len": estimate.max_model_len,
        "model_max_len": estimate.model_max_len,
        "kv_bytes_per_token": estimate.kv_bytes_per_token,
        "kv_cache_bytes": estimate.kv_cache_bytes,
        "activation_bytes": estimate.activation_bytes,
        "overhead_bytes": estimate.overhead_bytes,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "per_gpu_bytes": per_gpu,
        "min_gpu_total_bytes": {
            tp: math.ceil(b / options.gpu_memory_utilization) for tp, b in per_gpu.items()
        },
        "faq_rule_bytes": faq_rule_bytes(estimate.weights_bytes),
        "description": estimate.describe(),
        "warnings": warnings,
    }


def estimate_safetensors_report(path: str, backend_parameters: list[str]) -> dict[str, Any]:
    """`gpustack estimate <dir>`: read the local model's headers (no network) and summarise the estimate."""
    return safetensors_report(read_local_model(path), parse_vllm_options(backend_parameters))
