"""Small values kept in the data dir: the cluster token, session secret, worker name and id."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_private(path: Path, value: str) -> None:
    """Write a value readable by its owner only, atomically (a crash leaves the old one or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.replace(temporary, path)


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The value kept at `path`; if there is none yet, `make()` it and keep it."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = make()
    write_private(path, value)
    return value
