"""The scheduler's requirement for vLLM and MindIE, from their estimate and the user's options."""

from __future__ import annotations

from gpustack.estimate.mindie import MindieEstimate, MindieOptions
from gpustack.estimate.vllm import VllmEstimate, VllmOptions
from gpustack.scheduler.request import CpuNeed, TensorParallelNeed, fixed_parallel

RAY_OFF_HINT = "start the server with --enable-ray to use several workers"


def vllm_need(
    estimate: VllmEstimate, options: VllmOptions, ray: bool, cpu: CpuNeed | None = None
) -> TensorParallelNeed:
    """vLLM: CUDA/ROCm/DCU GPUs on Linux; several workers only through Ray; tensor parallel sizes that
    divide the attention heads, and the KV heads or be divided by them (vLLM's QKVParallelLinear). With
    `cpu`, its CPU build on one worker without such GPUs."""
    return TensorParallelNeed(
        check=lambda total, free, tp: estimate.check_gpu(total, free, tp, options),
        num_attention_heads=estimate.num_attention_heads,
        num_key_value_heads=estimate.num_key_value_heads,
        utilization=options.gpu_memory_utilization,
        multi_worker=ray,
        multi_worker_off_hint="" if ray else RAY_OFF_HINT,
        fixed=fixed_parallel(options),
        cpu=cpu,
        ray=ray,
    )


def mindie_need(estimate: MindieEstimate, options: MindieOptions) -> TensorParallelNeed:
    """MindIE: Ascend NPUs; power-of-2 tensor parallel sizes; multi-node with the same NPU count per node."""
    return TensorParallelNeed(
        check=lambda total, free, tp: estimate.check_gpu(total, free, tp, options),
        num_attention_heads=estimate.num_attention_heads,
        utilization=options.npu_memory_fraction,
        gpu_types=frozenset({"npu"}),
        multi_worker=True,
        power_of_two=True,
        equal_per_worker=True,
        fixed=fixed_parallel(options),
    )
