"""What this worker has of each backend, for its status (GET /v2/backends): found by looking, never by
installing, and looked for again only after an install or every INVENTORY_SECONDS."""

from __future__ import annotations

import asyncio
import logging
import time

from gpustack.backends.base import Executable
from gpustack.backends.registry import BACKENDS
from gpustack.schemas.backends import InstalledBackend, InstalledVersion
from gpustack.schemas.models import ModelSpec
from gpustack.worker.engines.managed import env_dir, installed_versions
from gpustack.worker.engines.resolve import Directories, NotInstalled, bin_versions, find

logger = logging.getLogger(__name__)

INVENTORY_SECONDS = 60.0


def inventory(dirs: Directories, gpu_type: str | None) -> list[InstalledBackend]:
    """Blocking: lists folders, searches PATH and may import a package."""
    found = []
    for backend in BACKENDS.values():
        versions = [
            InstalledVersion(version=v, origin="bin-dir", path=str(dirs.bin_dir / f"{backend.name}_{v}"))
            for v in bin_versions(dirs.bin_dir, backend.name)
        ]
        versions += [
            InstalledVersion(
                version=v, origin="managed", path=str(env_dir(dirs.backends_dir, backend.name, v))
            )
            for v in installed_versions(dirs.backends_dir, backend.name)
        ]
        executable = None
        try:
            resolved = find(backend, ModelSpec(backend=backend.name), dirs, gpu_type)  # type: ignore[arg-type]
            executable = resolved.path if isinstance(resolved, Executable) else None
        except (NotInstalled, ValueError):
            pass  # nothing yet, or (custom) an executable per model
        found.append(
            InstalledBackend(
                backend=backend.name,
                default_version=backend.default_version,
                versions=versions,
                executable=executable,
            )
        )
    return found


class Inventory:
    """The last inventory, refreshed off the event loop when stale or after an install."""

    def __init__(self, dirs: Directories) -> None:
        self.dirs = dirs
        self._found: list[InstalledBackend] = []
        self._at = float("-inf")

    def changed(self) -> None:
        self._at = float("-inf")

    async def current(self, gpu_type: str | None) -> list[InstalledBackend]:
        if time.monotonic() - self._at >= INVENTORY_SECONDS:
            try:
                self._found = await asyncio.to_thread(inventory, self.dirs, gpu_type)
            except Exception:  # noqa: BLE001 - a status without it beats no status
                logger.exception("could not list the installed backends")
            self._at = time.monotonic()
        return self._found
