"""`gpustack estimate`: the memory a model needs with given engine options, for each placement."""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from gpustack.backends.registry import backend_of
from gpustack.estimate.gguf import GGUFHeader, read_gguf_shards
from gpustack.estimate.gguf_mmproj import is_projector, read_projector
from gpustack.estimate.llama_box import LlamaBoxEstimate, estimate_llama_box
from gpustack.estimate.llama_box_options import LlamaBoxOptions
from gpustack.estimate.report import llama_box_report, render_generic, render_llama_box

# What this command estimates, per backend: the kind of model it reads, and for safetensors folders the
# estimator's report (module, function) for local folders and whether remote repositories are read.
GGUF_BACKENDS = ("llama-box",)
SAFETENSORS_REPORTS = {
    "vllm": ("vllm", "estimate_safetensors_report", True),
    "ascend-mindie": ("mindie", "estimate_mindie_report", False),
}
BACKENDS = ("auto", *GGUF_BACKENDS, *SAFETENSORS_REPORTS)
_REMOTE_PREFIXES = {
    "hf:": "huggingface",
    "huggingface:": "huggingface",
    "ms:": "modelscope",
    "modelscope:": "modelscope",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[^\s]+)?$")

EPILOG = """\
examples:
  gpustack estimate model.gguf                        GPUStack's defaults: --ctx-size 8192 --parallel 4
  gpustack estimate model.gguf --ctx-size 2048 -np 1  engine options follow the model (or come after --)
  gpustack estimate model.gguf --rpc h1:40064,h2:40064 -ngl 99 -ts 10,21
  gpustack estimate --json ./Qwen2.5-0.5B/            a folder of *.safetensors: the vLLM estimate
  gpustack estimate hf:org/repo/model-Q4_K_M.gguf     headers read over HTTP range requests
"""


class UsageError(ValueError):
    """The command line is wrong (bad engine option, unknown model reference): exit status 2."""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "estimate",
        help="Estimate the RAM and VRAM a model needs with given engine options.",
        description="Estimate the memory a model needs (CPU only, full and partial GPU offload, splits over "
        "devices) from its headers alone. Engine options (llama-box/llama.cpp, vLLM or MindIE flags) "
        "follow the model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    parser.set_defaults(handler=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the whole estimate as JSON")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="engine to estimate for (default: llama-box for GGUF, vLLM for safetensors)",
    )
    parser.add_argument(
        "model",
        help="a GGUF file (any shard of a split one), a folder of safetensors, or hf:owner/repo[/file.gguf]",
    )
    parser.add_argument("engine_args", nargs=argparse.REMAINDER, help="engine options, e.g. --ctx-size 2048")


def _own_flags(args: argparse.Namespace) -> tuple[bool, str, list[str]]:
    """--json and --backend may also come after the model, among the engine options."""
    as_json, backend, rest = bool(args.json), str(args.backend), []
    tokens = list(args.engine_args)
    if tokens[:1] == ["--"]:
        tokens = tokens[1:]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--json":
            as_json = True
        elif token == "--backend" or token.startswith("--backend="):
            value = (
                token.partition("=")[2] if "=" in token else (tokens[i + 1] if i + 1 < len(tokens) else "")
            )
            i += 0 if "=" in token else 1
            if value not in BACKENDS:
                raise UsageError(f"--backend: expects one of {', '.join(BACKENDS)}, got {value!r}")
            backend = value
        else:
            rest.append(token)
        i += 1
    return as_json, backend, rest


def run(args: argparse.Namespace) -> int:
    try:
        as_json, backend, engine_args = _own_flags(args)
        report, text = estimate(str(args.model), engine_args, backend)
    except UsageError as exc:
        print(f"gpustack estimate: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"gpustack estimate: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if as_json else text)
    return 0


def estimate(model: str, engine_args: list[str], backend: str = "auto") -> tuple[dict[str, Any], str]:
    """(report, text) for a model reference: a local path or a hub repository."""
    remote = _remote_ref(model)
    if remote is not None:
        return _remote(*remote, engine_args, backend)
    if os.path.isdir(model):
        if glob.glob(os.path.join(model, "*.safetensors")):
            return _safetensors(model, engine_args, backend)
        ggufs = _model_ggufs(model)
        if len(ggufs) != 1:
            found = ", ".join(os.path.basename(g) for g in ggufs) or "no *.gguf or *.safetensors files"
            raise UsageError(f"{model}: name the model file, the folder holds {found}")
        model = ggufs[0]
    if not os.path.exists(model):
        raise UsageError(f"{model}: no such file or directory")
    if backend not in ("auto", *GGUF_BACKENDS):
        raise UsageError(f"{model}: a GGUF file runs on llama-box, not {backend}")
    options = _llama_box_options(engine_args)
    shards = read_gguf_shards(model)
    projector = read_projector(model, options.mmproj, options.no_mmproj)
    return _llama_box(model, shards, options, projector)


def _model_ggufs(folder: str) -> list[str]:
    """The GGUF models in a folder (projectors left out, a split model counted once by its first shard)."""
    names = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    names = [n for n in names if not os.path.basename(n).lower().startswith("mmproj")]
    return [
        n for n in names if not re.search(r"-\d+-of-\d+\.gguf$", n) or re.search(r"-0*1-of-\d+\.gguf$", n)
    ]


def _llama_box_options(engine_args: list[str]) -> LlamaBoxOptions:
    """The options as the llama-box backend parses them for a deployment, GPUStack's defaults included:
    the figures shown are what the scheduler claims and what the worker's command line runs."""
    try:
        options: LlamaBoxOptions = backend_of("llama-box").parse_options(engine_args)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return options


def _llama_box(
    source: str, shards: list[GGUFHeader], options: LlamaBoxOptions, projector: GGUFHeader | None
) -> tuple[dict[str, Any], str]:
    header = shards[0]
    if is_projector(header):
        raise UsageError(f"{source} is a multimodal projector: estimate its model and pass --mmproj {source}")
    estimate = estimate_llama_box(header, options, shards, projector)
    layers_per_device, note = _devices(estimate, options)
    report = llama_box_report(source, header, estimate, options, layers_per_device, note)
    return report, render_llama_box(report)


def _devices(estimate: LlamaBoxEstimate, options: LlamaBoxOptions) -> tuple[list[int] | None, str | None]:
    """The split llama.cpp makes from --rpc / --tensor-split, when the options say enough to know it."""
    n_devices = max(len(options.tensor_split or []), len(options.rpc))
    if n_devices == 0:
        return None, None
    if options.split_mode in ("row", "tensor"):
        return None, f"--split-mode {options.split_mode} splits each tensor; only layer and none are shown"
    note = None
    if options.rpc:
        note = "RPC servers come first in llama.cpp's device order; local GPUs follow them"
    try:
        return estimate.split_for_options(options, n_devices), note
    except ValueError as exc:
        return None, f"{exc}; pass --tensor-split to see the split"


def _safetensors(path: str, engine_args: list[str], backend: str) -> tuple[dict[str, Any], str]:
    if backend in GGUF_BACKENDS:
        raise UsageError(f"{path}: {backend} runs GGUF files, this folder holds safetensors")
    module, function, _ = SAFETENSORS_REPORTS["vllm" if backend == "auto" else backend]
    estimate_report = _lazy(module, function, "safetensors models")
    report: dict[str, Any] = estimate_report(path, engine_args)
    return report, render_generic(report)


def _remote_ref(model: str) -> tuple[str, str, str | None] | None:
    """(source, owner/repo, file or None) for hf:..., ms:... or a bare Hugging Face id not found locally."""
    prefix = next((p for p in _REMOTE_PREFIXES if model.startswith(p)), None)
    if prefix is not None:
        source, rest = _REMOTE_PREFIXES[prefix], model[len(prefix) :].strip("/")
    else:
        if os.path.exists(model) or model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
            return None
        source, rest = "huggingface", model
    parts = rest.split("/", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise UsageError(f"{model}: expected owner/repo[/file.gguf]")
    return source, "/".join(parts[:2]), parts[2] if len(parts) > 2 else None


def _reader(source: str, repo: str, filename: str | None) -> Any:
    """The source's header reader (gpustack/sources), with HF_ENDPOINT, HF_TOKEN and the proxy variables."""
    from gpustack.schemas.models import ModelSpec
    from gpustack.sources.base import SourceSettings
    from gpustack.sources.registry import source_of

    fields = (
        {"huggingface_repo_id": repo, "huggingface_filename": filename}
        if source == "huggingface"
        else {"model_scope_model_id": repo, "model_scope_file_path": filename}
    )
    spec = ModelSpec.model_validate({"source": source, **fields})
    return source_of(source).reader(spec, SourceSettings.of())


def _remote(
    source: str, repo: str, filename: str | None, engine_args: list[str], backend: str
) -> tuple[dict[str, Any], str]:
    if filename and filename.endswith((".gguf", "*")):
        if backend not in ("auto", *GGUF_BACKENDS):
            raise UsageError(f"{filename}: a GGUF file runs on llama-box, not {backend}")
        options = _llama_box_options(engine_args)
        reader = _reader(source, repo, filename)
        where = f"{source} {repo}/{filename}"
        shards = _fetch(where, reader.gguf_shards)
        projector = _fetch(where, reader.projector, options.mmproj, options.no_mmproj)
        return _llama_box(f"{source}:{repo}/{filename}", shards, options, projector)
    if filename:
        raise UsageError(f"{repo}/{filename}: name a .gguf file, or the repository alone for safetensors")
    if backend in GGUF_BACKENDS:
        raise UsageError(f"{repo}: name the .gguf file for {backend}")
    if backend != "auto" and not SAFETENSORS_REPORTS[backend][2]:
        raise UsageError(
            f"remote models are estimated for llama-box and vLLM; {backend} is not supported yet"
        )
    report_for = _lazy("vllm", "safetensors_report", "safetensors models")
    parse_options = _lazy("vllm", "parse_vllm_options", "safetensors models")
    options = parse_options(engine_args)
    reader = _reader(source, repo, None)
    report: dict[str, Any] = report_for(_fetch(f"{source} {repo}", reader.safetensors), options)
    return report, render_generic(report)


def _fetch(where: str, read: Callable[..., Any], *args: Any) -> Any:
    """Call a remote reader; a network failure becomes one OSError line naming what could not be read."""
    try:
        return read(*args)
    except ValueError:  # the reader's own errors name the repository and file
        raise
    except Exception as exc:  # connection failures, httpx's transport and status errors
        raise OSError(f"{where}: {exc}") from exc


def _lazy(module: str, function: str, what: str) -> Callable[..., Any]:
    """A function of another estimator, imported only when needed; a clear error while it does not exist."""
    try:
        found = getattr(importlib.import_module(f"gpustack.estimate.{module}"), function)
    except (ImportError, AttributeError) as exc:
        raise UsageError(
            f"estimating {what} is not supported yet (gpustack.estimate.{module}.{function})"
        ) from exc
    if not callable(found):
        raise UsageError(f"estimating {what} is not supported yet (gpustack.estimate.{module}.{function})")
    return found
