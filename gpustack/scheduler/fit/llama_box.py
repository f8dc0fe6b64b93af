"""Where llama-box (llama.cpp) can run a GGUF model, in order of preference.

Every layer on GPUs first: one GPU, then several GPUs of one worker (--tensor-split), then GPUs of several
workers through llama.cpp RPC servers. Then, with CPU offloading allowed, as many layers as fit on the GPUs
of one worker or, through RPC, of several, the rest in RAM. Then the CPU alone. The first tier with any
candidate wins; scoring picks among its candidates (fit/llama_box_tiers.py).

What the user fixed comes first: -ngl 0 is the CPU; -ngl N below the model's layers is a partial offload of
exactly N layers, on the fewest GPUs that hold them; a GPU selector, --tensor-split and --split-mode none
pin the devices or the split (fit/llama_box_pinned.py).
"""

from __future__ import annotations

from gpustack.scheduler.candidates import Candidate, Rejections
from gpustack.scheduler.filters import Eligible
from gpustack.scheduler.fit.llama_box_pinned import NGL_WITHOUT_OFFLOADING, selected, user_split
from gpustack.scheduler.fit.llama_box_tiers import Tiers
from gpustack.scheduler.request import LlamaBoxNeed, PlacementRequest


def candidates(
    request: PlacementRequest, eligible: list[Eligible], rejections: Rejections
) -> list[Candidate]:
    need = request.need
    assert isinstance(need, LlamaBoxNeed)
    fit = Tiers(request, need, rejections)
    asked = need.gpu_layers
    if request.gpu_ids:
        return selected(fit, request, eligible, asked)
    if asked == 0:  # -ngl 0: the user wants the CPU, wherever it is
        return fit.cpu(eligible, allowed_on_gpu_workers=True)
    partial = asked if asked is not None and asked < fit.layers else None
    if partial is not None and not request.cpu_offloading:
        rejections.add(NGL_WITHOUT_OFFLOADING, asked=partial, cpu=fit.layers - partial, total=fit.layers)
        return []
    if need.estimate.options.tensor_split:
        return user_split(fit, eligible, asked)
    if partial is not None:
        return fit.partial_offload(eligible, partial, exact=True)
    if found := fit.single_gpu(eligible):
        return found
    if found := fit.multi_gpu(eligible):
        return found
    if request.distributed_inference_across_workers:
        if found := fit.across_workers(eligible):
            return found
    elif sum(len(entry.gpus) for entry in eligible) > 1:
        rejections.add("across workers: distributed inference across workers is off for this model")
    if request.cpu_offloading:
        if found := fit.partial_offload(eligible, fit.layers - 1, exact=False):
            return found
    elif any(entry.gpus for entry in eligible):
        rejections.add("CPU offloading is off for this model, so every layer must be on GPUs")
    return fit.cpu(eligible, allowed_on_gpu_workers=request.cpu_offloading)
