"""The llama-box (llama.cpp server) options that change its memory use, parsed from backend parameters."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from gpustack.estimate.gguf_types import GGML_TYPES_BY_NAME

# The types llama.cpp accepts for -ctk / -ctv.
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")

_TRUTHY = ("on", "enabled", "true", "1")
_FALSEY = ("off", "disabled", "false", "0")
_AUTO = ("auto",)


@dataclass
class LlamaBoxOptions:
    """Engine options as the estimate sees them; defaults are GPUStack's llama-box defaults."""

    ctx_size: int = 8192  # total context shared by all slots; 0 = the model's training context
    parallel: int = 4
    batch_size: int = 2048
    ubatch_size: int = 512
    # None = llama.cpp's "auto": on wherever the device supports it (CPU, CUDA, Metal, ...).
    flash_attn: bool | None = None
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    no_mmap: bool = False
    gpu_layers: int | None = None  # None = all
    kv_unified: bool = False  # llama.cpp turns it on only when --parallel is left to "auto"
    swa_full: bool = False
    cache_ram_mib: int | None = None  # --cache-ram; None = not given (engine default 8192 MiB, grows on use)
    ctx_checkpoints: int = 32  # --ctx-checkpoints: saved states per slot for sliding-window/recurrent models
    kv_offload: bool = True  # -nkvo keeps every layer's KV cache in RAM
    # Devices: llama.cpp orders RPC servers (in --rpc order) before local GPUs.
    rpc: list[str] = field(default_factory=list)  # --rpc host:port,...
    tensor_split: list[float] | None = None  # -ts 3,1: proportions of the offloaded layers per device
    split_mode: str = "layer"  # -sm none|layer|row|tensor
    main_gpu: int = 0  # -mg: the device used with --split-mode none
    # Multimodal projector: loaded on the first local GPU unless --no-mmproj-offload.
    mmproj: str | None = None  # --mmproj path
    no_mmproj: bool = False  # --no-mmproj: do not use a projector, not even one found next to the model
    mmproj_offload: bool = True
    # Embeddings and reranking: every token of a batch is an output.
    embeddings: bool = False  # --embeddings, or --reranking
    pooling: str | None = None  # --pooling none|mean|cls|last|rank; None = the model's own
    # CPU threads: None = llama.cpp's default; 0 = every logical core (what llama.cpp makes of -t 0 or -1)
    threads: int | None = None  # -t / --threads: generation
    threads_batch: int | None = None  # -tb / --threads-batch: prompt processing (default: --threads)

    @property
    def flash_attn_on(self) -> bool:
        return self.flash_attn is not False

    @property
    def outputs_per_batch(self) -> bool:
        """Whether the server reserves an output for every token of a ubatch (embeddings and pooling)."""
        return self.embeddings or self.pooling not in (None, "none")

    def kv_bytes_per_element(self, which: str) -> float:
        """Bytes one element of the K ("k") or V ("v") cache takes, e.g. 2 for f16, 34/32 for q8_0."""
        ggml_type = GGML_TYPES_BY_NAME[self.cache_type_k if which == "k" else self.cache_type_v]
        return ggml_type.type_size / ggml_type.block_size


def _int_value(flag: str, value: str | None, minimum: int = 1, extra: str = "") -> int:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        number = None
    if number is None or number < minimum:
        got = "nothing" if value is None else repr(value)
        raise ValueError(f"{flag}: expects a positive integer{extra}, got {got}")
    return number


def _set_ctx(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    options.ctx_size = _int_value(flag, value, 0, " (or 0 for the model's own context length)")


def _set_parallel(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    if value is not None and value.strip() == "-1":  # llama.cpp's auto: 4 slots sharing one KV cache
        options.parallel = 4
        options.kv_unified = True
        return
    options.parallel = _int_value(flag, value, 1, " (or -1 for auto)")


def _set_batch(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    options.batch_size = _int_value(flag, value)


def _set_ubatch(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    options.ubatch_size = _int_value(flag, value)


def _set_flash_attn(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    if value is None or value in _TRUTHY:
        options.flash_attn = True
    elif value in _FALSEY:
        options.flash_attn = False
    else:
        options.flash_attn = None


def _cache_type(flag: str, value: str | None) -> str:
    name = (value or "").lower()
    if name not in KV_CACHE_TYPES:
        got = "nothing" if value is None else repr(value)
        raise ValueError(f"{flag}: expects one of {', '.join(KV_CACHE_TYPES)}, got {got}")
    return name


def _set_cache_type_k(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    options.cache_type_k = _cache_type(flag, value)


def _set_cache_type_v(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    options.cache_type_v = _cache_type(flag, value)


def _set_gpu_layers(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    if value in ("auto", "all", "-1", "-2"):
        options.gpu_layers = None
        return
    options.gpu_layers = _int_value(flag, value, 0, " (or 'auto' / 'all')")


def _set_threads(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    # llama.cpp: a value <= 0 means std::thread::hardware_concurrency(), every logical core
    try:
        number = int(value) if value is not None else None
    except ValueError:
        number = None
    if number is None:
        got = "nothing" if value is None else repr(value)
        raise ValueError(f"{flag}: expects a number of threads, got {got}")
    if flag in ("-tb", "--threads-batch"):
        options.threads_batch = max(number, 0)
    else:
        options.threads = max(number, 0)


def _set_load_mode(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    modes = ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")
    if value not in modes:
        raise ValueError(f"{flag}: expects one of {', '.join(modes)}, got {value!r}")
    options.no_mmap = value in ("none", "mlock", "dio")


def _set_cache_ram(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    options.cache_ram_mib = _int_value(flag, value, -1, " (MiB; 0 = off, -1 = no limit)")


def _set_ctx_checkpoints(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    options.ctx_checkpoints = _int_value(flag, value, 0, " (or 0 to disable)")


def _set_rpc(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    servers = [s.strip() for s in (value or "").split(",") if s.strip()]
    if not servers:
        got = "nothing" if value is None else repr(value)
        raise ValueError(f"{flag}: expects RPC servers as host:port,host:port,..., got {got}")
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{flag}: expects RPC servers as host:port,host:port,..., got {server!r}")
    options.rpc = servers


def _set_tensor_split(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    # llama.cpp splits on "," and "/" and reads each part with std::stof
    parts = [p for p in re.split(r"[,/]+", value or "") if p.strip()]
    try:
        proportions = [float(p) for p in parts]
    except ValueError:
        proportions = []
    if not proportions or any(p < 0 or p != p or p == float("inf") for p in proportions):
        got = "nothing" if value is None else repr(value)
        raise ValueError(f"{flag}: expects proportions per device such as 3,1, got {got}")
    options.tensor_split = proportions


def _set_split_mode(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    modes = ("none", "layer", "row", "tensor")
    if value not in modes:
        raise ValueError(f"{flag}: expects one of {', '.join(modes)}, got {value!r}")
    options.split_mode = value


def _set_main_gpu(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    options.main_gpu = _int_value(flag, value, 0, " (a device index)")


def _set_mmproj(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    if not value:
        raise ValueError(f"{flag}: expects the path of a projector file, got nothing")
    options.mmproj = value


def _set_embeddings(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    options.embeddings = True


def _set_reranking(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    options.embeddings = True
    options.pooling = "rank"


def _set_pooling(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
    kinds = ("none", "mean", "cls", "last", "rank")
    if value not in kinds:
        raise ValueError(f"{flag}: expects one of {', '.join(kinds)}, got {value!r}")
    options.pooling = value


def _switch(name: str, on: bool) -> Callable[[LlamaBoxOptions, str, str | None], None]:
    def apply(options: LlamaBoxOptions, flag: str, value: str | None) -> None:
        setattr(options, name, on)

    return apply


_Setter = Callable[[LlamaBoxOptions, str, "str | None"], None]

# flag -> (setter, how it takes a value: "required", "optional" (only a known word) or "none")
_FLAGS: dict[str, tuple[_Setter, str]] = {}
for _names, _setter, _takes in [
    (("-c", "--ctx-size"), _set_ctx, "required"),
    (("-np", "--parallel"), _set_parallel, "required"),
    (("-b", "--batch-size"), _set_batch, "required"),
    (("-ub", "--ubatch-size"), _set_ubatch, "required"),
    (("-fa", "--flash-attn"), _set_flash_attn, "optional"),
    (("-ctk", "--cache-type-k"), _set_cache_type_k, "required"),
    (("-ctv", "--cache-type-v"), _set_cache_type_v, "required"),
    # --ngl is upstream GPUStack's spelling; llama.cpp itself knows only the other three
    (("-ngl", "--ngl", "--gpu-layers", "--n-gpu-layers"), _set_gpu_layers, "required"),
    (("-t", "--threads", "-tb", "--threads-batch"), _set_threads, "required"),
    (("-lm", "--load-mode"), _set_load_mode, "required"),
    (("-cram", "--cache-ram"), _set_cache_ram, "required"),
    (("-ctxcp", "--ctx-checkpoints", "--swa-checkpoints"), _set_ctx_checkpoints, "required"),
    (("--no-mmap",), _switch("no_mmap", True), "none"),
    (("--mmap",), _switch("no_mmap", False), "none"),
    (("-kvu", "--kv-unified"), _switch("kv_unified", True), "none"),
    (("-no-kvu", "--no-kv-unified"), _switch("kv_unified", False), "none"),
    (("--swa-full",), _switch("swa_full", True), "none"),
    (("-nkvo", "--no-kv-offload"), _switch("kv_offload", False), "none"),
    (("-kvo", "--kv-offload"), _switch("kv_offload", True), "none"),
    (("--rpc",), _set_rpc, "required"),
    (("-ts", "--tensor-split"), _set_tensor_split, "required"),
    (("-sm", "--split-mode"), _set_split_mode, "required"),
    (("-mg", "--main-gpu"), _set_main_gpu, "required"),
    (("-mm", "--mmproj"), _set_mmproj, "required"),
    (("--no-mmproj", "--no-mmproj-auto"), _switch("no_mmproj", True), "none"),
    (("--mmproj-auto",), _switch("no_mmproj", False), "none"),
    (("--no-mmproj-offload",), _switch("mmproj_offload", False), "none"),
    (("--mmproj-offload",), _switch("mmproj_offload", True), "none"),
    (("--embedding", "--embeddings"), _set_embeddings, "none"),
    (("--rerank", "--reranking"), _set_reranking, "none"),
    (("--pooling",), _set_pooling, "required"),
]:
    for _name in _names:
        _FLAGS[_name] = (_setter, _takes)

_OPTIONAL_VALUES = _TRUTHY + _FALSEY + _AUTO


def _tokens(backend_parameters: list[str]) -> list[str]:
    """Split each item into flags and values: "--x=1", "--x 1" and ["--x", "1"] all become ["--x", "1"]."""
    tokens: list[str] = []
    for item in backend_parameters:
        item = item.strip()
        if item.startswith("-") and "=" in item.split()[0]:
            flag, _, value = item.partition("=")
            tokens += [flag, value]
        elif item.startswith("-") and any(c.isspace() for c in item):
            try:
                tokens += shlex.split(item)
            except ValueError:
                tokens += item.split()
        elif item:
            tokens.append(item)
    return tokens


def parse_llama_box_options(backend_parameters: list[str]) -> LlamaBoxOptions:
    """Options from a model's backend parameters; unknown flags are ignored, bad values raise ValueError."""
    options = LlamaBoxOptions()
    tokens = _tokens(backend_parameters)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        known = _FLAGS.get(token)
        if known is None:
            continue
        setter, takes = known
        value: str | None = None
        if takes == "required" and i < len(tokens):
            value = tokens[i]
            i += 1
        elif takes == "optional" and i < len(tokens) and tokens[i].lower() in _OPTIONAL_VALUES:
            value = tokens[i].lower()
            i += 1
        setter(options, token, value)
    return options


def with_gpustack_defaults(options: LlamaBoxOptions) -> LlamaBoxOptions:
    """The options as GPUStack runs llama.cpp's server: its prompt cache (8 GiB of RAM by default, which no
    claim could honestly cover) is off unless the user sets --cache-ram."""
    if options.cache_ram_mib is None:
        options.cache_ram_mib = 0
    return options
