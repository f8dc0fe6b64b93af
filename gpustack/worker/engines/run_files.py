"""Each instance's run directory, <data-dir>/run/<instance id>/: files an engine reads at start (MindIE's
config.json) and state it keeps (vox-box's data dir). Private: configurations can hold credentials."""

from __future__ import annotations

import os
from pathlib import Path


def run_dir(data_dir: str, instance_id: int) -> Path:
    return Path(data_dir) / "run" / str(instance_id)


def write_run_files(folder: Path, files: dict[str, str]) -> None:
    """Create the folder (owner only) and write each file into it, replacing what a previous run left."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, content in files.items():
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise ValueError(f"a run file must be a plain file name, got {name!r}")
        target = folder / name
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
