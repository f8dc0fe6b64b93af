"""How many of llama.cpp's layers each device of a set can hold, in closed form.

llama.cpp (layer split mode) keeps the first layers on the CPU and gives the last `-ngl` layers to the
devices in order, each a contiguous run, the output layer to the last device that gets any (see
estimate/llama_box_split.py). What a device holds is then the bytes of its run (prefix sums), a copy of
the tied embeddings if it holds the output layer, its compute buffer (which depends only on whether it
runs the first layer, the output layer, and whether pipeline parallelism is on), and the projector if it
is the projector's device. So the most layers a device set can hold is found from the end, each device
taking the longest run that fits (a bisection over the prefix sums), and the memory of any split is a
sum over devices: no repeated trial splits. Results equal LlamaBoxEstimate.split() exactly
(tests/scheduler/test_layer_plan.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from itertools import accumulate

from gpustack.estimate.llama_box import LlamaBoxEstimate

# llama.cpp takes at most 15 proportions in --tensor-split (llama_max_devices() is 16 and the parser
# refuses as many), so a placement spans at most 15 devices.
MAX_DEVICES = 15


class LayerPlanner:
    """Layer counts per device, and their memory, for one estimate."""

    def __init__(self, estimate: LlamaBoxEstimate) -> None:
        self.estimate = estimate
        self.layers = estimate.total_layers
        weights, kv = estimate.layer_weights_bytes, estimate.layer_kv_bytes
        self._weights = [0, *accumulate(weights)]
        self._kv = [0, *accumulate(kv)]
        # What a device holds per layer of its run: the weights, and the KV cache unless -nkvo keeps it in RAM
        per_layer = [w + k for w, k in zip(weights, kv, strict=True)] if estimate.kv_offload else weights
        self._device = [0, *accumulate(per_layer)]
        self._tied = estimate.tied_output_bytes
        self._compute = {
            (first, output, pipeline): estimate.compute.gpu(first, output, pipeline)
            for first in (False, True)
            for output in (False, True)
            for pipeline in (False, True)
        }
        projector = estimate.projector
        self._projector = projector.total_bytes if projector is not None else 0
        self._projector_offload = projector is not None and estimate.projector_offload
        self._pipeline_possible = estimate.kv_offload and estimate.split_mode == "layer"
        self._ram_base = estimate.runtime_bytes + estimate.host_buffers_bytes + estimate.input_bytes

    # ---- memory of a given split

    def _pipeline(self, n_devices: int, offloaded: int) -> bool:
        return n_devices > 1 and offloaded == self.layers and self._pipeline_possible

    def projector_device(self, n_devices: int, rpc_devices: int) -> int | None:
        """clip's device: the first local GPU (local GPUs follow the RPC servers), else the first device."""
        if not self._projector_offload or n_devices == 0:
            return None
        return rpc_devices if n_devices > rpc_devices else 0

    def vram(self, counts: Sequence[int], rpc_devices: int = 0) -> list[int]:
        """Bytes on each device when device i holds counts[i] layers: LlamaBoxEstimate.split().vram."""
        layers = self.layers
        offloaded = sum(counts)
        pipeline = self._pipeline(len(counts), offloaded)
        start = layers - offloaded
        result = []
        for count in counts:
            end = start + count
            size = 0
            if count:
                output = end == layers
                size = self._device[end] - self._device[start] + self._compute[(start == 0, output, pipeline)]
                if output:
                    size += self._tied
            result.append(size)
            start = end
        target = self.projector_device(len(counts), rpc_devices)
        if target is not None:
            result[target] += self._projector
        return result

    def ram(self, counts: Sequence[int], rpc_devices: int = 0) -> int:
        """Host RAM of the same split (LlamaBoxEstimate.split().ram), growth not included."""
        layers = self.layers
        offloaded = sum(counts)
        on_cpu = layers - offloaded
        ram = self._ram_base + self._weights[on_cpu] + self._kv[on_cpu]
        if not self.estimate.kv_offload:
            ram += self._kv[layers] - self._kv[on_cpu]
        start = on_cpu
        for count in counts[:rpc_devices]:  # a copy of what goes to RPC servers, while loading
            end = start + count
            ram += self._weights[end] - self._weights[start] + (self._tied if count and end == layers else 0)
            start = end
        ram += self.estimate.compute.cpu(
            runs_layers=on_cpu >= 1 and layers > 1,
            runs_output=offloaded == 0,
            pipeline=self._pipeline(len(counts), offloaded),
        )
        if self._projector and self.projector_device(len(counts), rpc_devices) is None:
            ram += self._projector
        return ram

    def layer_bytes(self, layers: int) -> int:
        """What the last `layers` layers alone take on devices: a lower bound of any split of them."""
        return self._device[self.layers] - self._device[self.layers - max(0, min(layers, self.layers))]

    # ---- how many layers fit

    def most(self, capacities: Sequence[int], rpc_devices: int = 0, limit: int | None = None) -> list[int]:
        """Counts that put as many of the last `limit` layers (default: all) on the devices as fit within
        their capacities; every layer when they can hold the whole model. All zero when not one fits."""
        layers = self.layers
        limit = layers if limit is None else max(0, min(limit, layers))
        if limit == layers:
            counts = self._pack(capacities, rpc_devices, 0, self._pipeline(len(capacities), layers))
            if counts is not None and sum(counts) == layers:
                return counts
            limit = layers - 1  # all of them do not fit: without pipeline parallelism, one fewer at most
        counts = self._pack(capacities, rpc_devices, layers - limit, False)
        return counts if counts is not None else [0] * len(capacities)

    def _pack(
        self, capacities: Sequence[int], rpc_devices: int, floor: int, pipeline: bool
    ) -> list[int] | None:
        """From the last device backwards, each takes the longest run of layers (down to `floor`) that
        fits; None when the projector's device cannot hold even the projector."""
        n = len(capacities)
        counts = [0] * n
        end = self.layers
        target = self.projector_device(n, rpc_devices)
        prefix = self._device
        for i in range(n - 1, -1, -1):
            capacity = capacities[i] - (self._projector if i == target else 0)
            if capacity < 0 and i == target:
                return None
            if end <= floor:
                break
            output = end == self.layers
            fixed = self._compute[(False, output, pipeline)] + (self._tied if output else 0)
            low = max(floor, 1)
            start = bisect.bisect_left(prefix, prefix[end] + fixed - capacity, low, end)
            if start == low and floor == 0:  # the rest, the first layer included, may fit too
                first = self._compute[(True, output, pipeline)] + (self._tied if output else 0)
                if prefix[end] + first <= capacity:
                    start = 0
            if start < end:
                counts[i] = end - start
                end = start
        return counts

    def balanced(self, capacities: Sequence[int], rpc_devices: int = 0) -> list[int] | None:
        """Every layer on the devices, in proportion to the room each has (as llama.cpp splits by free
        memory when left to itself), or packed from the end where proportions do not fit; None when
        the devices cannot hold the whole model."""
        n = len(capacities)
        layers = self.layers
        if n == 1:
            counts = self.most(capacities, rpc_devices)
            return counts if sum(counts) == layers else None
        pipeline = self._pipeline(n, layers)
        overhead = self._compute[(False, False, pipeline)]
        target = self.projector_device(n, rpc_devices)
        room = [
            max(c - overhead - (self._projector if i == target else 0), 0) for i, c in enumerate(capacities)
        ]
        spare = sum(room)
        if spare > 0:
            counts = [layers * r // spare for r in room]
            for i in sorted(range(n), key=lambda i: -room[i])[: layers - sum(counts)]:
                counts[i] += 1
            used = self.vram(counts, rpc_devices)
            if all(u <= c for u, c in zip(used, capacities, strict=True)):
                return counts
        counts = self.most(capacities, rpc_devices)
        return counts if sum(counts) == layers else None
