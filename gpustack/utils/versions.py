"""Whether a worker and a server of given gpustack versions can work together, and what to say if not.

The contract between them (registration, status reports, watch events, placements) may change between
minor releases (between any two 0.x releases), never within one: versions that share major.minor (0.x:
the same 0.x) work together; a patch difference is only worth a line in the log."""

from __future__ import annotations

import re
from dataclasses import dataclass

_RELEASE = re.compile(r"^v?(\d+)\.(\d+)")


@dataclass(frozen=True)
class Compatibility:
    compatible: bool
    message: str = ""  # empty when the versions are the same


def _series(version: str) -> tuple[int, int] | None:
    match = _RELEASE.match(version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def check(server: str, worker: str, worker_name: str = "the worker") -> Compatibility:
    if worker == server:
        return Compatibility(True)
    upgrade = (
        f"install gpustack {server} on the worker (rerun the install script with "
        f"INSTALL_PACKAGE_SPEC=gpustack=={server}, or pip install gpustack=={server}), "
        "or upgrade the server to the worker's version"
    )
    if not worker:
        return Compatibility(
            True,
            f"{worker_name} did not say its gpustack version (an older release); this server runs {server}",
        )
    ours, theirs = _series(server), _series(worker)
    if ours is None or theirs is None:
        return Compatibility(True, f"{worker_name} runs gpustack {worker!r} and this server {server!r}")
    if ours != theirs:
        return Compatibility(
            False,
            f"{worker_name} runs gpustack {worker} and this server {server}: releases "
            f"{theirs[0]}.{theirs[1]} and {ours[0]}.{ours[1]} cannot work together; {upgrade}",
        )
    return Compatibility(
        True,
        f"{worker_name} runs gpustack {worker} and this server {server}; the same release series works, "
        "but keep them equal",
    )
