"""Memory estimate of llama-box (llama.cpp's server) for a GGUF model: weights, KV cache, compute buffers."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpustack.estimate.gguf import GGUFHeader
from gpustack.estimate.gguf_model import ModelShape, model_shape
from gpustack.estimate.llama_box_options import KV_CACHE_TYPES, LlamaBoxOptions, parse_llama_box_options

__all__ = [
    "KV_CACHE_TYPES",
    "LlamaBoxEstimate",
    "LlamaBoxOptions",
    "MemoryNeed",
    "estimate_llama_box",
    "parse_llama_box_options",
]

MiB = 1 << 20
KV_PAD = 256  # llama.cpp pads context sizes and the SWA cache to 256 cells
# What the server process needs beyond its buffers, measured with a CPU build after a prompt of a full
# ubatch: executable and libraries (17 MiB resident), heap, threads and HTTP, plus the vocabulary's tables.
RUNTIME_BASE_BYTES = 40 * MiB
RUNTIME_BYTES_PER_TOKEN = 96
# Checkpoints of sliding-window or recurrent state each slot makes while it reads one long prompt.
CHECKPOINTS_PER_PROMPT = 2
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
    compute_bytes: int  # the compute buffer of the device that runs the layers
    cpu_only: MemoryNeed  # everything in RAM
    full_offload: MemoryNeed  # every layer on one GPU; RAM keeps the input layer and host buffers
    ctx_size: int = 0  # context the engine really allocates (padded, or the model's own when 0 was asked)
    parallel: int = 1
    flash_attn: bool = True
    runtime_bytes: int = 0  # process, libraries, vocabulary tables
    host_buffers_bytes: int = 0  # logits output buffer and the context checkpoints of current prompts
    host_compute_bytes: int = 0  # inputs kept on the host when layers run on a GPU
    input_bytes: int = 0  # token embeddings: llama.cpp never offloads them
    layer_weights_bytes: list[int] = field(default_factory=list)  # per offloadable layer, output last
    layer_kv_bytes: list[int] = field(default_factory=list)  # per offloadable layer, output last (0)
    tied_output_bytes: int = 0  # a copy of token_embd the output layer needs on its GPU
    growth_bytes: int = 0  # RAM the server may add under use: prompt cache and context checkpoints

    def offload(self, gpu_layers: int) -> MemoryNeed:
        """Memory with the last `gpu_layers` layers (the output layer first) on one GPU, as -ngl does."""
        n = max(0, min(gpu_layers, self.total_layers))
        if n == 0:
            return MemoryNeed(ram=self.cpu_only.ram, vram=0)
        split = self.total_layers - n
        gpu_weights = sum(self.layer_weights_bytes[split:]) + self.tied_output_bytes
        gpu_kv = sum(self.layer_kv_bytes[split:])
        cpu_weights = self.input_bytes + sum(self.layer_weights_bytes[:split])
        cpu_kv = sum(self.layer_kv_bytes[:split])
        # Layers left on the CPU need their own compute buffer there; otherwise only the inputs stay.
        cpu_compute = self.compute_bytes if split > 0 else self.host_compute_bytes
        ram = self.runtime_bytes + self.host_buffers_bytes + cpu_weights + cpu_kv + cpu_compute
        return MemoryNeed(ram=ram, vram=gpu_weights + gpu_kv + self.compute_bytes)

    def describe(self) -> str:
        text = (
            f"weights {_mib(self.weights_bytes)}, KV cache {_mib(self.kv_cache_bytes)} "
            f"(ctx {self.ctx_size}, parallel {self.parallel}), compute {_mib(self.compute_bytes)}"
        )
        if self.growth_bytes:
            text += f"; cached prompts may add up to {_mib(self.growth_bytes)} of RAM while serving"
        return text


def _mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


def _pad(n: int, to: int = KV_PAD) -> int:
    return -(-n // to) * to


@dataclass
class _Context:
    """The engine's derived sizes (llama_context / llama_kv_cache_iswa)."""

    n_ctx: int
    n_seq: int
    streams: int  # KV streams: 1 when unified, else one per slot
    cells: int  # full-attention cells per stream
    swa_cells: int  # sliding-window cells per stream
    n_ubatch: int


def _context(shape: ModelShape, options: LlamaBoxOptions) -> _Context:
    n_ctx = _pad(options.ctx_size or shape.n_ctx_train or 4096)
    n_seq = max(1, options.parallel)
    if options.kv_unified:
        streams, cells = 1, n_ctx
    else:
        streams, cells = n_seq, _pad(n_ctx // n_seq)
        n_ctx = cells * n_seq
    n_batch = min(n_ctx, options.batch_size)
    n_ubatch = min(n_batch, options.ubatch_size)
    swa_cells = cells
    if shape.n_swa and not options.swa_full:
        window = shape.n_swa * (n_seq if options.kv_unified else 1) + n_ubatch
        swa_cells = _pad(min(cells, window))
    return _Context(n_ctx, n_seq, streams, cells, swa_cells, n_ubatch)


def _cell_bytes(shape: ModelShape, options: LlamaBoxOptions, il: int) -> float:
    """KV cache bytes of one token in layer `il`."""
    n_kv = shape.n_head_kv[il]
    return n_kv * (
        shape.key_length * options.kv_bytes_per_element("k")
        + shape.value_length * options.kv_bytes_per_element("v")
    )


def _layer_kv_bytes(shape: ModelShape, options: LlamaBoxOptions, ctx: _Context) -> list[int]:
    sizes = []
    for il in range(shape.n_layer):
        cells = ctx.swa_cells if shape.swa_layers[il] else ctx.cells
        state = shape.state_floats[il] * 4 * ctx.n_seq  # recurrent state is f32, one per sequence
        sizes.append(int(cells * ctx.streams * _cell_bytes(shape, options, il)) + state)
    return sizes


def _checkpoint_bytes(shape: ModelShape, options: LlamaBoxOptions) -> int:
    """One context checkpoint of one slot: the state llama.cpp cannot roll back (window, recurrent state)."""
    swa = 0
    if shape.n_swa and not options.swa_full:
        swa_layers = [il for il in range(shape.n_layer) if shape.swa_layers[il]]
        swa = int(shape.n_swa * sum(_cell_bytes(shape, options, il) for il in swa_layers))
    return swa + 4 * sum(shape.state_floats)


def _compute_bytes(shape: ModelShape, ctx: _Context, flash_attn: bool) -> tuple[int, int]:
    """(compute buffer of the device running the layers, inputs kept on the host when that is a GPU).

    Fitted to llama.cpp's graph reservation for one ubatch: the peak is either the feed-forward
    block (three n_ff-wide and five n_embd-wide activations) or, without flash attention, the
    attention scores of the largest layer (n_kv x ubatch x n_head floats); the KQ masks of the
    full and sliding-window caches stay alive throughout.
    """
    u = ctx.n_ubatch
    attention = [il for il in range(shape.n_layer) if shape.n_head_kv[il]]
    has_full = any(not shape.swa_layers[il] for il in attention)
    has_swa = any(shape.swa_layers[il] for il in attention)
    mask_cells = (ctx.cells if has_full else 0) + (ctx.swa_cells if has_swa else 0)
    masks = u * mask_cells * (2 if flash_attn else 4)
    n_head = max(shape.n_head, default=0)
    q_dim = n_head * shape.key_length
    kv_dim = max(shape.n_head_kv, default=0) * shape.key_length
    misc = u * 4 * q_dim
    ffn_peak = u * 4 * (3 * shape.n_ff + 5 * shape.n_embd) + masks + misc
    attn_peak = 0
    if attention and not flash_attn:
        n_kv = ctx.cells if has_full else ctx.swa_cells
        attn_peak = u * 4 * (n_head * n_kv + 2 * shape.n_embd + 3 * q_dim + 8 * kv_dim) + masks + misc
        # the CPU converts the scores to f16 for the product with V, in its own work buffer
        attn_peak += u * n_head * n_kv * 2
    state_peak = 0
    if any(shape.state_floats):  # recurrent layers work on the whole state of every sequence
        state_peak = u * 4 * 5 * shape.n_embd + 3 * max(shape.state_floats) * 4 * ctx.n_seq
    host = u * 4 * shape.n_embd + u * mask_cells * 4
    return max(ffn_peak, attn_peak, state_peak), host


def _growth_bytes(options: LlamaBoxOptions, ctx: _Context, kv_bytes: int, checkpoint: int) -> int:
    """Upper bound of RAM the server adds while serving: its prompt cache and older context checkpoints."""
    cache_mib = CACHE_RAM_DEFAULT_MIB if options.cache_ram_mib is None else options.cache_ram_mib
    prompt_cache = cache_mib * MiB if cache_mib >= 0 else kv_bytes  # -1: no limit; a full cache at least
    older = max(0, options.ctx_checkpoints - CHECKPOINTS_PER_PROMPT)
    return prompt_cache + ctx.n_seq * older * checkpoint


def estimate_llama_box(
    header: GGUFHeader, options: LlamaBoxOptions, shards: list[GGUFHeader] | None = None
) -> LlamaBoxEstimate:
    """Estimate llama-box's memory for a model; `shards` are all headers of a split model (first included)."""
    shape = model_shape(header, shards)
    ctx = _context(shape, options)
    flash_attn = options.flash_attn_on
    layer_kv = _layer_kv_bytes(shape, options, ctx)
    kv_bytes = sum(layer_kv)
    compute, host_compute = _compute_bytes(shape, ctx, flash_attn)
    runtime = RUNTIME_BASE_BYTES + RUNTIME_BYTES_PER_TOKEN * shape.n_vocab
    checkpoint = _checkpoint_bytes(shape, options)
    current_checkpoints = ctx.n_seq * min(CHECKPOINTS_PER_PROMPT, options.ctx_checkpoints) * checkpoint
    host_buffers = ctx.n_seq * shape.n_vocab * 4 + current_checkpoints  # logits of each slot's last token
    weights = shape.weights_bytes
    estimate = LlamaBoxEstimate(
        architecture=shape.architecture,
        total_layers=shape.n_layer + 1,
        weights_bytes=weights,
        kv_cache_bytes=kv_bytes,
        compute_bytes=compute,
        cpu_only=MemoryNeed(ram=runtime + host_buffers + weights + kv_bytes + compute, vram=0),
        full_offload=MemoryNeed(ram=0, vram=0),
        ctx_size=ctx.n_ctx,
        parallel=ctx.n_seq,
        flash_attn=flash_attn,
        runtime_bytes=runtime,
        host_buffers_bytes=host_buffers,
        host_compute_bytes=host_compute,
        input_bytes=shape.input_bytes,
        layer_weights_bytes=shape.layer_bytes + [shape.output_bytes],
        layer_kv_bytes=layer_kv + [0],
        tied_output_bytes=shape.token_embd_bytes if shape.tied_output else 0,
        growth_bytes=_growth_bytes(options, ctx, kv_bytes, checkpoint),
    )
    estimate.full_offload = estimate.offload(estimate.total_layers)
    return estimate
