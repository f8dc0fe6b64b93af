"""Memory estimate of llama-box (llama.cpp's server) for a GGUF model: weights, KV cache, compute buffers,
on the host and on each device a placement puts layers on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gpustack.estimate.gguf import GGUFHeader
from gpustack.estimate.gguf_mmproj import ProjectorEstimate, estimate_projector
from gpustack.estimate.gguf_model import model_shape
from gpustack.estimate.llama_box_buffers import (
    ComputeBuffers,
    EngineContext,
    checkpoint_bytes,
    compute_buffers,
    engine_context,
    layer_kv_bytes,
    output_buffer_bytes,
)
from gpustack.estimate.llama_box_options import KV_CACHE_TYPES, LlamaBoxOptions, parse_llama_box_options
from gpustack.estimate.llama_box_split import (
    DeviceSplit,
    OffloadRow,
    layer_devices,
    layers_from_tensor_split,
    tensor_split_for,
)

__all__ = [
    "KV_CACHE_TYPES",
    "DeviceSplit",
    "LlamaBoxEstimate",
    "LlamaBoxOptions",
    "MemoryNeed",
    "OffloadRow",
    "estimate_llama_box",
    "layers_from_tensor_split",
    "parse_llama_box_options",
    "tensor_split_for",
]

MiB = 1 << 20
# What the server process needs beyond its buffers, measured with a CPU build after a prompt of a full
# ubatch: executable and libraries (17 MiB resident), heap, threads and HTTP, plus the vocabulary's tables.
RUNTIME_BASE_BYTES = 40 * MiB
RUNTIME_BYTES_PER_TOKEN = 96
CACHE_RAM_DEFAULT_MIB = 8192  # llama-server's --cache-ram default


@dataclass
class MemoryNeed:
    """Bytes of host memory and of memory on one GPU."""

    ram: int
    vram: int


@dataclass
class LlamaBoxEstimate:
    """What llama-box allocates for one model with given options, split by where it lives."""

    architecture: str
    total_layers: int  # block_count + 1: the output layer is offloadable too
    weights_bytes: int
    kv_cache_bytes: int  # attention KV cache plus recurrent state
    compute_bytes: int  # the compute buffer of a CPU that runs every layer
    cpu_only: MemoryNeed  # everything in RAM
    full_offload: MemoryNeed  # every layer on one GPU; RAM keeps the input layer and host buffers
    ctx_size: int = 0  # context the engine really allocates (padded, or the model's own when 0 was asked)
    parallel: int = 1
    flash_attn: bool = True
    runtime_bytes: int = 0  # process, libraries, vocabulary tables
    host_buffers_bytes: int = 0  # the output buffer: logits (and embeddings) copied back from the graph
    host_compute_bytes: int = 0  # the CPU's compute buffer when every layer runs on a GPU
    input_bytes: int = 0  # token embeddings: llama.cpp never offloads them
    layer_weights_bytes: list[int] = field(default_factory=list)  # per offloadable layer, output last
    layer_kv_bytes: list[int] = field(default_factory=list)  # per offloadable layer, output last (0)
    tied_output_bytes: int = 0  # a copy of token_embd the output layer needs on its GPU
    growth_bytes: int = 0  # RAM the server adds under use: prompt cache and context checkpoints
    compute: ComputeBuffers = field(default_factory=lambda: ComputeBuffers(0, 0, 0, 0))
    kv_offload: bool = True  # False with -nkvo: every KV cache stays in RAM
    projector: ProjectorEstimate | None = None
    projector_offload: bool = True  # --no-mmproj-offload keeps the projector on the CPU
    rpc_devices: int = 0  # the first devices of a placement are these RPC servers (--rpc)
    embeddings: bool = False
    split_mode: str = "layer"  # with "none" llama.cpp keeps only the main GPU: no pipeline parallelism
    options: LlamaBoxOptions = field(default_factory=LlamaBoxOptions)  # what it was estimated for
    _table: list[OffloadRow] | None = field(default=None, repr=False, compare=False)

    def split(
        self,
        layers_per_device: Sequence[int],
        projector_device: int | None = None,
        rpc_devices: int | None = None,
    ) -> DeviceSplit:
        """Memory when device i holds `layers_per_device[i]` layers (llama.cpp's device order: RPC servers
        first) in layer split mode; the CPU keeps the first layers, the last device the output layer.

        `rpc_devices` says how many of the devices are RPC servers (default: as many as --rpc named): while
        loading, llama.cpp's RPC client holds a copy of every tensor it sends, which the host RAM includes.
        The projector goes to `projector_device`, by default where llama.cpp puts it: the first local GPU
        (the first device after the RPC servers), else the first device; the CPU without devices.
        """
        counts = list(layers_per_device)
        devices = layer_devices(self.total_layers, counts)
        rpc = self.rpc_devices if rpc_devices is None else rpc_devices
        ram, vram, weights = self._place_layers(devices, len(counts))
        ram += self.runtime_bytes + self.host_buffers_bytes + self.input_bytes
        ram += sum(weights[:rpc])  # in flight to the RPC servers while the model loads
        # ggml_backend_sched: one compute buffer per backend that runs layers; with every layer on two or
        # more devices, pipeline parallelism keeps copies of each device's inputs (llama_context ctor).
        pipeline = (
            len(counts) > 1 and devices[0] is not None and self.kv_offload and self.split_mode == "layer"
        )
        output_device = devices[-1]
        ram += self.compute.cpu(
            runs_layers=any(device is None for device in devices[:-1]),
            runs_output=output_device is None,
            pipeline=pipeline,
        )
        for device, count in enumerate(counts):
            if count:
                vram[device] += self.compute.gpu(
                    runs_first_layer=device == devices[0],
                    runs_output=device == output_device,
                    pipeline=pipeline,
                )
        if self.projector is not None:
            target = projector_device
            if target is None:
                target = self._projector_device(len(counts), rpc)
            if target is not None and not 0 <= target < len(counts):
                raise ValueError(f"projector device {target} is not one of the {len(counts)} devices")
            if target is None or not self.projector_offload:
                ram += self.projector.total_bytes
            else:
                vram[target] += self.projector.total_bytes
        return DeviceSplit(ram=ram, vram=vram)

    def _place_layers(self, devices: list[int | None], n_devices: int) -> tuple[int, list[int], list[int]]:
        """(RAM, VRAM per device, weights per device) of the layers' weights and KV caches."""
        ram, vram, weights = 0, [0] * n_devices, [0] * n_devices
        for layer, device in enumerate(devices):
            layer_weights, kv = self.layer_weights_bytes[layer], self.layer_kv_bytes[layer]
            if device is None:
                ram += layer_weights + kv
                continue
            weights[device] += layer_weights
            if self.kv_offload:
                vram[device] += kv
            else:
                ram += kv
        if devices and devices[-1] is not None:
            weights[devices[-1]] += self.tied_output_bytes
        vram = [v + w for v, w in zip(vram, weights, strict=True)]
        return ram, vram, weights

    @staticmethod
    def _projector_device(n_devices: int, rpc_devices: int) -> int | None:
        """clip takes the first GPU llama.cpp registered: local GPUs register before --rpc servers."""
        if n_devices == 0:
            return None
        return rpc_devices if n_devices > rpc_devices else 0

    def offload(self, gpu_layers: int) -> MemoryNeed:
        """Memory with the last `gpu_layers` layers (the output layer first) on one GPU, as -ngl does."""
        placed = self.split([max(0, min(gpu_layers, self.total_layers))])
        return MemoryNeed(ram=placed.ram, vram=placed.vram[0])

    def table(self) -> list[OffloadRow]:
        """RAM and VRAM with 0, 1, ... total_layers layers offloaded to one device (computed once: the
        scheduler asks for it on every partial-offload decision)."""
        if self._table is None:
            rows = []
            for n in range(self.total_layers + 1):
                need = self.offload(n)
                rows.append(OffloadRow(layers=n, ram=need.ram, vram=need.vram))
            self._table = rows
        return list(self._table)

    def split_for_options(self, options: LlamaBoxOptions, n_devices: int) -> list[int]:
        """Layers per device that llama.cpp picks from -ngl, --tensor-split and --split-mode.

        Without --tensor-split on several devices llama.cpp splits by free memory, which only the
        engine sees: ValueError.
        """
        gpu_layers = self.total_layers if options.gpu_layers is None else options.gpu_layers
        gpu_layers = min(gpu_layers, self.total_layers) if n_devices else 0
        if n_devices <= 1 or options.split_mode == "none":
            counts = [0] * n_devices
            if n_devices:
                counts[min(options.main_gpu, n_devices - 1) if options.split_mode == "none" else 0] = (
                    gpu_layers
                )
            return counts
        if not options.tensor_split:
            raise ValueError(
                f"with {n_devices} devices and no --tensor-split llama.cpp splits the layers by free memory"
            )
        proportions = (list(options.tensor_split) + [0.0] * n_devices)[:n_devices]
        return layers_from_tensor_split(proportions, gpu_layers, self.total_layers)

    def describe(self) -> str:
        text = (
            f"weights {_mib(self.weights_bytes)}, KV cache {_mib(self.kv_cache_bytes)} "
            f"(ctx {self.ctx_size}, parallel {self.parallel}), compute {_mib(self.compute_bytes)}"
        )
        if self.projector is not None:
            text += f", projector {_mib(self.projector.total_bytes)}"
        if self.growth_bytes:
            growth = _mib(self.growth_bytes)
            text += f"; the prompt cache and checkpoints may add up to {growth} of RAM while serving"
        return text


def _mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


def _growth_bytes(options: LlamaBoxOptions, ctx: EngineContext, kv_bytes: int, checkpoint: int) -> int:
    """Upper bound of RAM the server adds while serving: its prompt cache, and the context checkpoints
    (sliding-window or recurrent state) each slot saves along long prompts, up to --ctx-checkpoints."""
    if options.embeddings:  # an embeddings server keeps no prompts
        return 0
    cache_mib = CACHE_RAM_DEFAULT_MIB if options.cache_ram_mib is None else options.cache_ram_mib
    prompt_cache = cache_mib * MiB if cache_mib >= 0 else kv_bytes  # -1: no limit; a full cache at least
    return prompt_cache + ctx.n_seq * options.ctx_checkpoints * checkpoint


def estimate_llama_box(
    header: GGUFHeader,
    options: LlamaBoxOptions,
    shards: list[GGUFHeader] | None = None,
    projector: GGUFHeader | None = None,
) -> LlamaBoxEstimate:
    """Estimate llama-box's memory for a model; `shards` are all headers of a split model (first included),
    `projector` the header of its multimodal projector (--mmproj), if it runs with one."""
    shape = model_shape(header, shards)
    ctx = engine_context(shape, options)
    flash_attn = options.flash_attn_on
    layer_kv = layer_kv_bytes(shape, options, ctx)
    kv_bytes = sum(layer_kv)
    compute = compute_buffers(shape, ctx, flash_attn)
    runtime = RUNTIME_BASE_BYTES + RUNTIME_BYTES_PER_TOKEN * shape.n_vocab
    checkpoint = checkpoint_bytes(shape, options)
    host_buffers = output_buffer_bytes(shape, options, ctx)
    estimate = LlamaBoxEstimate(
        architecture=shape.architecture,
        total_layers=shape.n_layer + 1,
        weights_bytes=shape.weights_bytes,
        kv_cache_bytes=kv_bytes,
        compute_bytes=compute.cpu(runs_layers=True, runs_output=True),
        cpu_only=MemoryNeed(ram=0, vram=0),
        full_offload=MemoryNeed(ram=0, vram=0),
        ctx_size=ctx.n_ctx,
        parallel=ctx.n_seq,
        flash_attn=flash_attn,
        runtime_bytes=runtime,
        host_buffers_bytes=host_buffers,
        host_compute_bytes=compute.host,
        input_bytes=shape.input_bytes,
        layer_weights_bytes=shape.layer_bytes + [shape.output_bytes],
        layer_kv_bytes=layer_kv + [0],
        tied_output_bytes=shape.token_embd_bytes if shape.tied_output else 0,
        growth_bytes=_growth_bytes(options, ctx, kv_bytes, checkpoint),
        compute=compute,
        kv_offload=options.kv_offload,
        projector=estimate_projector(projector, flash_attn) if projector is not None else None,
        projector_offload=options.mmproj_offload,
        rpc_devices=len(options.rpc),
        embeddings=options.embeddings,
        split_mode=options.split_mode,
        options=options,
    )
    estimate.cpu_only = MemoryNeed(ram=estimate.split([]).ram, vram=0)
    estimate.full_offload = estimate.offload(estimate.total_layers)
    return estimate
