"""The buffers llama.cpp allocates besides the weights: KV cache, compute buffers per device, outputs.

Sizes follow llama.cpp's own derivations (llama_context, llama_kv_cache_iswa, ggml_backend_sched); the
compute buffers are fitted to the sizes the engine logs ("compute buffer size"), measured with a CPU
build on the CPU and on llama.cpp RPC devices, which the engine schedules as GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpustack.estimate.gguf_model import ModelShape
from gpustack.estimate.llama_box_options import LlamaBoxOptions

KV_PAD = 256  # llama.cpp pads context sizes and the SWA cache to 256 cells
# ggml_backend_sched keeps this many copies of every split input with pipeline parallelism.
PIPELINE_COPIES = 4
# Hidden-state-sized activations each backend keeps for pipeline parallelism on top of the extra masks,
# as measured for SmolLM2 and Gemma 3 on two RPC devices (12-13 on the device running the first layer,
# 5-6 on the next one, 6-7 on the CPU).
PIPELINE_FIRST_ACTIVATIONS = 14
PIPELINE_OTHER_ACTIVATIONS = 7
PIPELINE_HOST_ACTIVATIONS = 7


def pad(n: int, to: int = KV_PAD) -> int:
    return -(-n // to) * to


@dataclass
class EngineContext:
    """The engine's derived sizes (llama_context / llama_kv_cache_iswa)."""

    n_ctx: int
    n_seq: int
    streams: int  # KV streams: 1 when unified, else one per slot
    cells: int  # full-attention cells per stream
    swa_cells: int  # sliding-window cells per stream
    n_batch: int
    n_ubatch: int
    n_outputs: int  # outputs the compute graph is reserved for


def engine_context(shape: ModelShape, options: LlamaBoxOptions) -> EngineContext:
    n_ctx = pad(options.ctx_size or shape.n_ctx_train or 4096)
    n_seq = max(1, options.parallel)
    if options.kv_unified:
        streams, cells = 1, n_ctx
    else:
        streams, cells = n_seq, pad(n_ctx // n_seq)
        n_ctx = cells * n_seq
    n_batch = min(n_ctx, options.batch_size)
    n_ubatch = min(n_batch, options.ubatch_size)
    if options.embeddings:  # the server makes every batch one ubatch: n_batch = n_ubatch
        n_batch = n_ubatch
    swa_cells = cells
    if shape.n_swa and not options.swa_full:
        window = shape.n_swa * (n_seq if options.kv_unified else 1) + n_ubatch
        swa_cells = pad(min(cells, window))
    # server_output_limits: one output per slot, or every token of a ubatch for embeddings and pooling
    n_outputs = n_ubatch if options.outputs_per_batch else min(n_seq, n_ubatch)
    return EngineContext(n_ctx, n_seq, streams, cells, swa_cells, n_batch, n_ubatch, n_outputs)


def cell_bytes(shape: ModelShape, options: LlamaBoxOptions, il: int) -> float:
    """KV cache bytes of one token in layer `il`."""
    n_kv = shape.n_head_kv[il]
    return n_kv * (
        shape.key_length * options.kv_bytes_per_element("k")
        + shape.value_length * options.kv_bytes_per_element("v")
    )


def layer_kv_bytes(shape: ModelShape, options: LlamaBoxOptions, ctx: EngineContext) -> list[int]:
    """KV cache (or recurrent state) of each repeating layer; it lives on the device of its layer."""
    if not shape.kv_cache:
        return [0] * shape.n_layer
    sizes = []
    for il in range(shape.n_layer):
        cells = ctx.swa_cells if shape.swa_layers[il] else ctx.cells
        state = shape.state_floats[il] * 4 * ctx.n_seq  # recurrent state is f32, one per sequence
        sizes.append(int(cells * ctx.streams * cell_bytes(shape, options, il)) + state)
    return sizes


def checkpoint_bytes(shape: ModelShape, options: LlamaBoxOptions) -> int:
    """One context checkpoint of one slot: the state llama.cpp cannot roll back (window, recurrent state)."""
    swa = 0
    if shape.n_swa and not options.swa_full and shape.kv_cache:
        swa_layers = [il for il in range(shape.n_layer) if shape.swa_layers[il]]
        swa = int(shape.n_swa * sum(cell_bytes(shape, options, il) for il in swa_layers))
    return swa + 4 * sum(shape.state_floats)


def output_buffer_bytes(shape: ModelShape, options: LlamaBoxOptions, ctx: EngineContext) -> int:
    """The host buffer the outputs are copied into (llama_context::output_reserve).

    It holds logits of one token per slot; with --embeddings every token of a batch is an output and
    the buffer grows to logits (where the model has an LM head) plus embeddings of a whole ubatch.
    """
    if not options.embeddings:
        return ctx.n_seq * shape.n_vocab * 4
    rows = max(ctx.n_ubatch, ctx.n_seq)
    return rows * 4 * ((shape.n_vocab if shape.lm_head else 0) + shape.n_embd)


@dataclass
class ComputeBuffers:
    """Peaks of ggml's graph allocation for one ubatch, from which each backend's buffer follows."""

    layers: int  # a backend running repeating layers, as the CPU allocates it
    output: int  # a backend running the output layer (logits of every reserved output)
    activation: int  # one hidden state of a ubatch (n_embd x n_ubatch f32)
    masks: int  # the KQ masks of a ubatch (f16 with flash attention, else f32)

    @property
    def host(self) -> int:
        """The CPU's buffer when every layer runs elsewhere: embeddings lookup, masks, positions."""
        return 5 * self.activation + self.masks

    def cpu(self, runs_layers: bool, runs_output: bool, pipeline: bool = False) -> int:
        size = max(self.layers if runs_layers else self.host, self.output if runs_output else 0)
        if pipeline:
            size += self._pipeline(PIPELINE_HOST_ACTIVATIONS)
        return size

    def gpu(self, runs_first_layer: bool, runs_output: bool, pipeline: bool = False) -> int:
        """A GPU running layers: the inputs (token embeddings, positions) stay on the CPU, so it needs
        one hidden state less than the CPU would when it runs the first layer, three less otherwise."""
        size = self.layers - (1 if runs_first_layer else 3) * self.activation
        if runs_output:
            size = max(size, self.output - self.activation)
        if pipeline:
            size += self._pipeline(
                PIPELINE_FIRST_ACTIVATIONS if runs_first_layer else PIPELINE_OTHER_ACTIVATIONS
            )
        return max(size, 0)

    def _pipeline(self, activations: int) -> int:
        return (PIPELINE_COPIES - 1) * self.masks + activations * self.activation


def compute_buffers(shape: ModelShape, ctx: EngineContext, flash_attn: bool) -> ComputeBuffers:
    """Fitted to llama.cpp's graph reservation for one ubatch.

    The layers' peak is either the feed-forward block (three n_ff-wide and five n_embd-wide
    activations) or, without flash attention, the attention scores of the largest layer (n_kv x
    ubatch x n_head floats); the KQ masks of the full and sliding-window caches stay alive throughout.
    The output layer's peak is its logits (n_vocab x reserved outputs) next to six hidden states.
    """
    u = ctx.n_ubatch
    attention = [il for il in range(shape.n_layer) if shape.n_head_kv[il]]
    has_full = any(not shape.swa_layers[il] for il in attention)
    has_swa = any(shape.swa_layers[il] for il in attention)
    if shape.kv_cache:
        mask_cells = (ctx.cells if has_full else 0) + (ctx.swa_cells if has_swa else 0)
        n_kv = ctx.cells if has_full else ctx.swa_cells
    else:  # an encoder attends within the batch
        mask_cells = n_kv = u if attention else 0
    masks = u * mask_cells * (2 if flash_attn else 4)
    activation = u * 4 * shape.n_embd
    n_head = max(shape.n_head, default=0)
    q_dim = n_head * shape.key_length
    kv_dim = max(shape.n_head_kv, default=0) * shape.key_length
    misc = u * 4 * q_dim
    ffn_peak = u * 4 * (3 * shape.n_ff + 5 * shape.n_embd) + masks + misc
    attn_peak = 0
    if attention and not flash_attn:
        attn_peak = u * 4 * (n_head * n_kv + 2 * shape.n_embd + 3 * q_dim + 8 * kv_dim) + masks + misc
        # the CPU converts the scores to f16 for the product with V, in its own work buffer
        attn_peak += u * n_head * n_kv * 2
    state_peak = 0
    if any(shape.state_floats):  # recurrent layers work on the whole state of every sequence
        state_peak = u * 4 * 5 * shape.n_embd + 3 * max(shape.state_floats) * 4 * ctx.n_seq
    logits = ctx.n_outputs * shape.n_vocab * 4 if shape.lm_head else ctx.n_outputs * shape.n_embd * 4
    output_peak = logits + masks + 6 * activation
    return ComputeBuffers(
        layers=max(ffn_peak, attn_peak, state_peak),
        output=output_peak,
        activation=activation,
        masks=masks,
    )
