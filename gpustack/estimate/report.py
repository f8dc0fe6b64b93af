"""An estimate as plain data (for --json and programs) and as a table a person reads at a glance."""

from __future__ import annotations

import os
from typing import Any

from gpustack.estimate.gguf import GGUFHeader
from gpustack.estimate.gguf_types import LLAMA_FILE_TYPES, ggml_type_name
from gpustack.estimate.llama_box import LlamaBoxEstimate, LlamaBoxOptions
from gpustack.estimate.llama_box_split import tensor_split_for

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
TABLE_ROWS = 10  # the offload table shows about this many layer counts, plus the first and last


def size(n: int | float) -> str:
    """Bytes as a person reads them: 512 B, 98.2 MiB, 7.45 GiB."""
    if n >= GiB:
        return f"{n / GiB:.2f} GiB"
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    if n >= KiB:
        return f"{n / KiB:.1f} KiB"
    return f"{int(n)} B"


def _file_type(header: GGUFHeader) -> str:
    """The quantization people call the file by (general.file_type), else its most common tensor type."""
    named = LLAMA_FILE_TYPES.get(int(header.get("general.file_type", -1) or -1))
    if named:
        return named
    by_type: dict[int, int] = {}
    for tensor in header.tensors:
        by_type[tensor.ggml_type] = by_type.get(tensor.ggml_type, 0) + tensor.n_bytes
    return ggml_type_name(max(by_type, key=lambda t: by_type[t])) if by_type else "unknown"


def llama_box_report(
    source: str,
    header: GGUFHeader,
    estimate: LlamaBoxEstimate,
    options: LlamaBoxOptions,
    layers_per_device: list[int] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Everything about a llama-box estimate, JSON-able; sizes are bytes."""
    report: dict[str, Any] = {
        "source": source,
        "backend": "llama-box",
        "model": {
            "name": header.get("general.name") or os.path.basename(source),
            "architecture": estimate.architecture,
            "layers": estimate.total_layers - 1,
            "offloadable_layers": estimate.total_layers,
            "weights_bytes": estimate.weights_bytes,
            "file_type": _file_type(header),
            "context_length": header.arch_value("context_length"),
            "vocab_size": len(header.get("tokenizer.ggml.tokens") or []) or header.arch_value("vocab_size"),
            "projector": estimate.projector.path if estimate.projector else None,
        },
        "options": {
            "ctx_size": estimate.ctx_size,
            "parallel": estimate.parallel,
            "ctx_per_slot": estimate.ctx_size // max(estimate.parallel, 1),
            "flash_attn": estimate.flash_attn,
            "cache_type_k": options.cache_type_k,
            "cache_type_v": options.cache_type_v,
            "batch_size": options.batch_size,
            "ubatch_size": options.ubatch_size,
            "gpu_layers": options.gpu_layers,
            "embeddings": options.embeddings,
            "pooling": options.pooling,
            "rpc": options.rpc,
            "tensor_split": options.tensor_split,
            "split_mode": options.split_mode,
        },
        "buffers": {
            "weights_bytes": estimate.weights_bytes,
            "kv_cache_bytes": estimate.kv_cache_bytes,
            "compute_bytes": estimate.compute_bytes,
            "host_compute_bytes": estimate.host_compute_bytes,
            "host_buffers_bytes": estimate.host_buffers_bytes,
            "runtime_bytes": estimate.runtime_bytes,
            "projector_bytes": estimate.projector.weights_bytes if estimate.projector else 0,
            "projector_compute_bytes": estimate.projector.compute_bytes if estimate.projector else 0,
        },
        "cpu_only": {"ram_bytes": estimate.cpu_only.ram, "vram_bytes": estimate.cpu_only.vram},
        "full_offload": {"ram_bytes": estimate.full_offload.ram, "vram_bytes": estimate.full_offload.vram},
        "offload_table": [
            {"layers": row.layers, "ram_bytes": row.ram, "vram_bytes": row.vram} for row in estimate.table()
        ],
        "growth_bytes": estimate.growth_bytes,
        "description": estimate.describe(),
    }
    if layers_per_device is not None:
        placed = estimate.split(layers_per_device)
        names = [f"RPC{i} ({server})" for i, server in enumerate(options.rpc)]
        names += [f"GPU{i}" for i in range(len(layers_per_device) - len(names))]
        report["devices"] = {
            "gpu_layers": sum(layers_per_device),
            "tensor_split": tensor_split_for(layers_per_device),
            "ram_bytes": placed.ram,
            "per_device": [
                {"name": name, "layers": layers, "vram_bytes": vram}
                for name, layers, vram in zip(names, layers_per_device, placed.vram, strict=True)
            ],
        }
    if note:
        report["note"] = note
    return report


def _condensed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    step = max(1, -(-(len(rows) - 1) // TABLE_ROWS))
    return [row for i, row in enumerate(rows) if i % step == 0 or i == len(rows) - 1]


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  " + "   ".join(cells).rstrip())
    return lines


def render_llama_box(report: dict[str, Any]) -> str:
    model, opts, buffers = report["model"], report["options"], report["buffers"]
    total = model["offloadable_layers"]
    lines = [f"{model['name']}  ({report['source']})"]
    vocab = f", vocabulary {model['vocab_size']:,}" if model["vocab_size"] else ""
    lines.append(
        f"  model     {model['architecture']}, {model['layers']} layers + output{vocab}, "
        f"weights {size(model['weights_bytes'])} ({model['file_type']})"
    )
    if model["projector"]:
        projector = buffers["projector_bytes"] + buffers["projector_compute_bytes"]
        lines.append(f"  projector {os.path.basename(model['projector'])}: {size(projector)}")
    mode = ", embeddings" if opts["embeddings"] else ""
    lines.append(
        f"  context   ctx {opts['ctx_size']} ({opts['ctx_per_slot']} per slot), parallel {opts['parallel']}, "
        f"flash attention {'on' if opts['flash_attn'] else 'off'}, KV {opts['cache_type_k']}/"
        f"{opts['cache_type_v']}{mode}"
    )
    lines.append(
        f"  buffers   KV cache {size(buffers['kv_cache_bytes'])}, compute {size(buffers['compute_bytes'])}, "
        f"output {size(buffers['host_buffers_bytes'])}, runtime {size(buffers['runtime_bytes'])}"
    )
    lines.append("")
    cpu, full = report["cpu_only"], report["full_offload"]
    lines += _table(
        ["placement", "RAM", "VRAM"],
        [
            ["CPU only", size(cpu["ram_bytes"]), "-"],
            [f"all {total} layers on one GPU", size(full["ram_bytes"]), size(full["vram_bytes"])],
        ],
    )
    lines.append("")
    rows = _condensed(report["offload_table"])
    lines += _table(
        ["layers on GPU", "RAM", "VRAM"],
        [[f"{r['layers']}/{total}", size(r["ram_bytes"]), size(r["vram_bytes"])] for r in rows],
    )
    devices = report.get("devices")
    if devices:
        lines.append("")
        lines.append(
            f"  split over {len(devices['per_device'])} devices (-ngl {devices['gpu_layers']} "
            f"--tensor-split {devices['tensor_split']}): RAM {size(devices['ram_bytes'])}"
        )
        lines += _table(
            ["device", "layers", "VRAM"],
            [[d["name"], str(d["layers"]), size(d["vram_bytes"])] for d in devices["per_device"]],
        )
    if report.get("note"):
        lines.append("")
        lines.append(f"  note: {report['note']}")
    if report["growth_bytes"]:
        lines.append("")
        lines.append(
            f"  while serving, the prompt cache and context checkpoints may add up to "
            f"{size(report['growth_bytes'])} of RAM (counted in the RAM claim)"
        )
    return "\n".join(lines)


def render_generic(report: dict[str, Any], indent: str = "", sizes: bool = False) -> str:
    """Any other estimate (safetensors, remote): one line per field; byte counts (keys ending in _bytes,
    and every value under such a key) as sizes."""
    lines = []
    for key, value in report.items():
        as_size = sizes or str(key).endswith("_bytes")
        label = str(key)[: -len("_bytes")] if str(key).endswith("_bytes") else str(key)
        if isinstance(value, dict):
            lines.append(f"{indent}{label}:")
            lines.append(render_generic(value, indent + "  ", as_size))
        elif as_size and isinstance(value, int | float) and not isinstance(value, bool):
            lines.append(f"{indent}{label}: {size(value)}")
        else:
            lines.append(f"{indent}{label}: {value}")
    return "\n".join(line for line in lines if line)
