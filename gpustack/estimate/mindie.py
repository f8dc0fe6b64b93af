"""NPU memory an Ascend MindIE instance of a safetensors model needs, per NPU.

GPUStack runs MindIE with NPU_MEMORY_FRACTION = --npu-memory-fraction (default 0.9), maxSeqLen =
--max-seq-len (default min(8192, the model's)), maxPrefillTokens = maxSeqLen, cacheBlockSize 128 and
npuMemSize -1, so MindIE loads the weights (split over the world size), warms up with one prefill of
maxPrefillTokens tokens, and turns what is left of fraction × total into KV blocks. The model fits
when weights + KV for one maxSeqLen sequence + the warm-up peak + ATB/HCCL workspace fit in that share.
MindIE keeps a full-length cache in every layer (no sliding-window saving is assumed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gpustack.estimate.hf_config import ModelArch, parse_config
from gpustack.estimate.safetensors import ModelFiles, loaded_weights, model_dtype_bytes, read_local_model
from gpustack.estimate.vllm import (
    FAQ_EXTRA,
    FAQ_FACTOR,
    activation_bytes,
    faq_rule_bytes,
    fmt_gib,
    kv_cache_bytes,
    parallel_flags_given,
    parse_flags,
    parse_fraction,
    parse_positive_int,
    resolve_max_len,
    with_breakdown,
)

# ATB operator workspace, HCCL buffers and the runtime's own allocations inside the fraction.
WORKSPACE_BYTES = 768 * 2**20


@dataclass
class MindieOptions:
    """The MindIE parameters GPUStack accepts that change memory use; defaults are GPUStack's."""

    npu_memory_fraction: float = 0.9
    max_seq_len: int | None = None  # None → min(8192, the model's own)
    max_prefill_tokens: int | None = None  # None → max_seq_len, as GPUStack configures it
    max_batch_size: int = 200
    max_prefill_batch_size: int = 50
    cache_block_size: int = 128
    tensor_parallel_size: int = 1  # attention's tensor parallel size
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1  # attention's data parallel groups (MoE layers span the whole world)
    dtype: str = "auto"
    parallel_given: bool = False  # the user set -tp, -pp or -dp: the world size is theirs

    @property
    def devices(self) -> int:
        """NPUs one instance spans (MindIE's worldSize): tp x pp with pipeline parallelism, tp x dp with
        data parallelism (GPUStack's MindIE refuses both at once), else tp."""
        if self.pipeline_parallel_size > 1:
            return self.tensor_parallel_size * self.pipeline_parallel_size
        return self.tensor_parallel_size * self.data_parallel_size


def _power_of_two(text: str) -> int:
    value = parse_positive_int(text)
    if value & (value - 1):
        raise ValueError("must be a power of 2")
    return value


_MINDIE_VALUED = {
    "--npu-memory-fraction": ("npu_memory_fraction", parse_fraction),
    "--max-seq-len": ("max_seq_len", parse_positive_int),
    "--max-prefill-tokens": ("max_prefill_tokens", parse_positive_int),
    "--max-batch-size": ("max_batch_size", parse_positive_int),
    "--max-prefill-batch-size": ("max_prefill_batch_size", parse_positive_int),
    "--cache-block-size": ("cache_block_size", _power_of_two),
    "--tensor-parallel-size": ("tensor_parallel_size", _power_of_two),
    "-tp": ("tensor_parallel_size", _power_of_two),
    "--pipeline-parallel-size": ("pipeline_parallel_size", parse_positive_int),
    "-pp": ("pipeline_parallel_size", parse_positive_int),
    "--data-parallel-size": ("data_parallel_size", _power_of_two),
    "-dp": ("data_parallel_size", _power_of_two),
    "--dtype": ("dtype", str.lower),
}


def parse_mindie_options(backend_parameters: list[str]) -> MindieOptions:
    options = MindieOptions()
    parse_flags(backend_parameters, _MINDIE_VALUED, {}, options)
    if options.pipeline_parallel_size > 1 and options.data_parallel_size > 1:
        raise ValueError(
            f"--pipeline-parallel-size {options.pipeline_parallel_size} and --data-parallel-size "
            f"{options.data_parallel_size} cannot be used together with MindIE: choose one"
        )
    options.parallel_given = parallel_flags_given(backend_parameters)
    return options


@dataclass
class MindieEstimate:
    """What one MindIE instance needs on each NPU, for given options."""

    weights_bytes: int
    kv_bytes_per_token: int
    max_model_len: int  # maxSeqLen
    activation_bytes: int
    overhead_bytes: int
    num_attention_heads: int
    num_key_value_heads: int
    architecture: str
    architecture_known: bool
    kv_cache_bytes: int = 0
    parameters: int = 0
    options: MindieOptions = field(default_factory=MindieOptions, repr=False)
    arch: ModelArch | None = field(default=None, repr=False)
    dtype_bytes: int = 2

    def breakdown(self, tensor_parallel: int, pipeline_parallel: int | None = None) -> dict[str, int]:
        tp = max(1, tensor_parallel)
        pp = max(1, pipeline_parallel or self.options.pipeline_parallel_size)
        arch = self.arch
        if not self.architecture_known or arch is None:
            return {"weights": math.ceil(self.weights_bytes * FAQ_FACTOR / (tp * pp)), "runtime": FAQ_EXTRA}
        prefill = self.options.max_prefill_tokens or self.max_model_len
        # MindIE allocates whole blocks for every layer, sliding-window ones included.
        full = ModelArch(**{**arch.__dict__, "sliding_layers": 0, "sliding_window": None})
        kv = kv_cache_bytes(
            full, self.dtype_bytes, self.max_model_len, tp, pp, self.options.cache_block_size, 0
        )
        seqs = min(self.options.max_batch_size, prefill)
        return {
            "weights": math.ceil(self.weights_bytes / (tp * pp)),
            "kv_cache": kv,
            "activations": activation_bytes(arch, self.dtype_bytes, prefill, seqs, tp),
            "runtime": WORKSPACE_BYTES,
        }

    def per_gpu_bytes(self, tensor_parallel: int, pipeline_parallel: int | None = None) -> int:
        """What each NPU must hold at least, inside the --npu-memory-fraction share."""
        return sum(self.breakdown(tensor_parallel, pipeline_parallel).values())

    def check_gpu(
        self, total: int, allocatable: int, tensor_parallel: int, options: MindieOptions
    ) -> str | None:
        fraction = options.npu_memory_fraction
        budget = int(total * fraction)
        if allocatable < budget:
            return (
                f"needs {fraction:.0%} of {fmt_gib(total)} ({fmt_gib(budget)}) allocatable,"
                f" has {fmt_gib(allocatable)}"
            )
        parts = self.breakdown(tensor_parallel, options.pipeline_parallel_size)
        need = sum(parts.values())
        if need > budget:
            detail = ", ".join(f"{name.replace('_', ' ')} {fmt_gib(v)}" for name, v in parts.items())
            return (
                f"needs {fmt_gib(need)} within the {fmt_gib(budget)} MindIE may use"
                f" (--npu-memory-fraction {fraction:g}): {detail}"
            )
        return None

    def describe(self) -> str:
        tp = self.options.tensor_parallel_size
        if not self.architecture_known:
            return (
                f"MindIE, {self.architecture} (architecture not modelled):"
                f" weights {fmt_gib(self.weights_bytes)};"
                f" FAQ rule {fmt_gib(faq_rule_bytes(self.weights_bytes))}"
            )
        return (
            f"MindIE, {self.architecture}: weights {fmt_gib(self.weights_bytes)};"
            f" KV cache {self.kv_bytes_per_token / 1024:.1f} KiB/token,"
            f" {fmt_gib(self.kv_cache_bytes)} for --max-seq-len {self.max_model_len};"
            f" activations {fmt_gib(self.activation_bytes)}; workspace {fmt_gib(self.overhead_bytes)};"
            f" {fmt_gib(self.per_gpu_bytes(tp))} per NPU at world size {tp}"
        )


def estimate_mindie(model: ModelFiles, options: MindieOptions) -> MindieEstimate:
    arch = parse_config(model.config)
    weights = loaded_weights(model, arch, options.dtype)
    dtype_bytes = model_dtype_bytes(arch, options.dtype)
    tp = max(1, options.tensor_parallel_size)
    estimate = MindieEstimate(
        weights_bytes=weights.bytes,
        kv_bytes_per_token=arch.num_layers * arch.kv_elements_per_token_per_layer(tp) * dtype_bytes,
        max_model_len=resolve_max_len(options.max_seq_len, arch),
        activation_bytes=0,
        overhead_bytes=0,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        architecture=arch.architecture,
        architecture_known=arch.known,
        parameters=weights.parameters,
        options=options,
        arch=arch,
        dtype_bytes=dtype_bytes,
    )
    return with_breakdown(estimate, tp)


def estimate_mindie_report(path: str, backend_parameters: list[str]) -> dict[str, Any]:
    """The MindIE counterpart of vllm.estimate_safetensors_report, for a local directory."""
    model = read_local_model(path)
    options = parse_mindie_options(backend_parameters)
    estimate = estimate_mindie(model, options)
    return {
        "source": model.source,
        "backend": "ascend-mindie",
        "architecture": estimate.architecture,
        "architecture_known": estimate.architecture_known,
        "weights_bytes": estimate.weights_bytes,
        "max_seq_len": estimate.max_model_len,
        "kv_bytes_per_token": estimate.kv_bytes_per_token,
        "kv_cache_bytes": estimate.kv_cache_bytes,
        "activation_bytes": estimate.activation_bytes,
        "overhead_bytes": estimate.overhead_bytes,
        "npu_memory_fraction": options.npu_memory_fraction,
        "per_npu_bytes": {str(tp): estimate.per_gpu_bytes(tp) for tp in (1, 2, 4, 8)},
        "faq_rule_bytes": faq_rule_bytes(estimate.weights_bytes),
        "description": estimate.describe(),
    }
