"""Managed environments: one venv per (backend, version) under <data-dir>/backends/<backend>/<version>/,
installed on demand with pip.

pip runs with the worker's environment, so PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX
and pip's config files apply as usual; wheels put in <data-dir>/backends/wheels/ are offered to pip too
(--find-links), for clusters without an index. An install goes into a temporary folder that is renamed
when complete, under a lock that other gpustack processes on the machine respect, so an environment is
either whole or absent: a second instance, or a restart, finds it and starts in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from gpustack.backends.base import PipPackage
from gpustack.worker.engines.file_lock import FileLock

COMPLETE_MARKER = ".gpustack-complete"
WHEELS_DIR = "wheels"
PIP_LINES_IN_ERROR = 15
PROGRESS_EVERY_SECONDS = 1.0

Progress = Callable[[str], Awaitable[None]]


class InstallFailed(Exception):
    """pip could not install the environment; the message quotes pip's own last lines."""


@dataclass(frozen=True)
class ManagedEnv:
    path: Path

    @property
    def scripts_dir(self) -> Path:
        return self.path / ("Scripts" if os.name == "nt" else "bin")

    @property
    def python(self) -> Path:
        return self.scripts_dir / ("python.exe" if os.name == "nt" else "python")


def env_dir(root: Path, backend: str, version: str) -> Path:
    return root / backend / version


def find_env(root: Path, backend: str, version: str) -> ManagedEnv | None:
    path = env_dir(root, backend, version)
    return ManagedEnv(path) if (path / COMPLETE_MARKER).is_file() else None


def installed_versions(root: Path, backend: str) -> list[str]:
    """Versions with a complete environment, sorted."""
    folder = root / backend
    try:
        names = [entry.name for entry in folder.iterdir() if not entry.name.startswith(".")]
    except OSError:
        return []
    return sorted(name for name in names if (folder / name / COMPLETE_MARKER).is_file())


def available_versions(pip_output: str) -> list[str] | None:
    """The versions the index offers, from pip's "(from versions: ...)"; None when pip did not say."""
    found = re.search(r"\(from versions: ([^)]*)\)", pip_output)
    if found is None:
        return None
    listed = found.group(1).strip()
    return [] if listed == "none" else [v.strip() for v in listed.split(",") if v.strip()]


class _PipProgress:
    """What pip is doing, in a few words, from its output lines (for the instance's state message)."""

    def __init__(self) -> None:
        self.collected = 0
        self.current = "starting pip"
        self.reported_at = 0.0

    def feed(self, line: str) -> None:
        line = line.strip()
        if line.startswith("Collecting "):
            self.collected += 1
            self.current = f"resolving {line.split()[1]} ({self.collected} packages so far)"
        elif line.startswith("Downloading "):
            self.current = "downloading " + line.removeprefix("Downloading ").split("/")[-1]
        elif line.startswith("Progress ") and " of " in line:
            done, _, total = line.removeprefix("Progress ").partition(" of ")
            with contextlib.suppress(ValueError, ZeroDivisionError):
                head = self.current.split(": ")[0]
                self.current = f"{head}: {int(done) * 100 // int(total)}%"
        elif line.startswith("Installing collected packages:"):
            count = len(line.split(":", 1)[1].split(","))
            self.current = f"installing {count} packages"


def _pip_command(python: Path, package: PipPackage, wheels: Path) -> list[str]:
    argv = [
        sys.executable, "-m", "pip", "--python", str(python), "install",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "raw",
    ]  # fmt: skip
    if wheels.is_dir():
        argv += ["--find-links", str(wheels)]
    return argv + list(package.pip_args) + list(package.requirements)


async def _run_logged(
    argv: list[str],
    log: BinaryIO,
    on_line: Callable[[str], None],
    tail: deque[str],
    env: dict[str, str] | None = None,
) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert process.stdout is not None
    try:
        async for raw in process.stdout:
            log.write(raw)
            line = raw.decode(errors="replace").rstrip()
            if not line.startswith("Progress "):
                tail.append(line)
            on_line(line)
        return await process.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise


def _fix_scripts(scripts: Path, built_at: Path, final: Path) -> None:
    """Console scripts name the interpreter by absolute path: point them at the folder's final name."""
    old, new = f"#!{built_at}".encode(), f"#!{final}".encode()
    for entry in scripts.iterdir():
        if not entry.is_file() or entry.is_symlink():
            continue
        with open(entry, "rb") as handle:
            head = handle.read(len(old))
            if head != old:
                continue
            rest = handle.read()
        entry.write_bytes(new + rest)


def _stale_builds(folder: Path, version: str) -> list[Path]:
    try:
        return [entry for entry in folder.iterdir() if entry.name.startswith(f".tmp-{version}-")]
    except OSError:
        return []


async def ensure_env(
    root: Path,
    backend: str,
    version: str,
    package: PipPackage,
    progress: Progress,
    log: BinaryIO,
) -> ManagedEnv:
    """The environment of (backend, version), installed first if it is not yet; pip's output goes to `log`.

    Raises InstallFailed with pip's own last lines; nothing is left half-installed."""
    found = find_env(root, backend, version)
    if found is not None:
        return found
    label = f"{backend} {version}"
    folder = root / backend
    folder.mkdir(parents=True, exist_ok=True)
    async with FileLock(folder / f".{version}.lock").acquire(
        lambda: progress(f"installing {label}: waiting for another install of it to finish")
    ):
        found = find_env(root, backend, version)
        if found is not None:  # another process finished it while this one waited
            return found
        for stale in _stale_builds(folder, version):  # left by a process killed mid-install
            await asyncio.to_thread(shutil.rmtree, stale, True)
        build = folder / f".tmp-{version}-{os.getpid()}"
        final = env_dir(root, backend, version)
        try:
            await _build(build, final, package, root / WHEELS_DIR, label, progress, log)
            await asyncio.to_thread(os.replace, build, final)
        finally:
            if build.exists():
                await asyncio.to_thread(shutil.rmtree, build, True)
    return ManagedEnv(final)


async def _build(
    build: Path,
    final: Path,
    package: PipPackage,
    wheels: Path,
    label: str,
    progress: Progress,
    log: BinaryIO,
) -> None:
    started = time.monotonic()
    await progress(f"installing {label}: creating the environment")
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tail: deque[str] = deque(maxlen=PIP_LINES_IN_ERROR)
    venv = [sys.executable, "-m", "venv", "--without-pip", str(build)]
    log.write(f"==== {stamp} gpustack installs {label}: {' '.join(venv)}\n".encode())
    if await _run_logged(venv, log, lambda _line: None, tail) != 0:
        raise InstallFailed(f"could not create a Python environment for {label}:\n" + "\n".join(tail))
    env = ManagedEnv(build)
    pip = _pip_command(env.python, package, wheels)
    log.write(f"==== {' '.join(pip)}\n".encode())
    state = _PipProgress()
    pending: set[asyncio.Task[None]] = set()

    def on_line(line: str) -> None:
        shown = state.current
        state.feed(line)
        now = time.monotonic()
        if now - state.reported_at >= PROGRESS_EVERY_SECONDS and state.current != shown:
            state.reported_at = now
            text = f"installing {label}: {state.current} ({now - started:.0f}s)"
            task = asyncio.ensure_future(progress(text))
            pending.add(task)
            task.add_done_callback(pending.discard)

    code = await _run_logged(pip, log, on_line, tail)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    if code != 0:
        raise InstallFailed(_failure(label, code, "\n".join(tail)))
    if package.remove:
        remove = [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env.python),
            "uninstall",
            "-y",
            *package.remove,
        ]
        log.write(f"==== {' '.join(remove)}\n".encode())
        # pip uninstall reads PIP_REQUIREMENT too: a worker told to install from a lock file that way
        # (an offline cluster) must not then uninstall everything the lock names.
        quiet = {k: v for k, v in os.environ.items() if k not in ("PIP_REQUIREMENT", "PIP_REQUIREMENTS")}
        if await _run_logged(remove, log, lambda _line: None, tail, quiet) != 0:
            raise InstallFailed(_failure(label, code, "\n".join(tail)))
    await asyncio.to_thread(_fix_scripts, env.scripts_dir, build, final)
    marker = {"requirements": list(package.requirements), "installed_at": stamp}
    (build / COMPLETE_MARKER).write_text(json.dumps(marker) + "\n")
    log.write(f"==== installed {label} in {time.monotonic() - started:.0f}s\n".encode())
    log.flush()


def _failure(label: str, code: int, pip_lines: str) -> str:
    versions = available_versions(pip_lines)
    backend, _, version = label.partition(" ")
    if versions is not None:
        offered = ", ".join(versions[-15:]) if versions else "none"
        return (
            f"{backend} has no version {version} on the package index; it offers: {offered}. "
            f"Set the model's backend_version to one of them. pip said:\n{pip_lines}"
        )
    return f"installing {label} with pip failed (exit code {code}); pip's last lines:\n{pip_lines}"
