"""Where a worker keeps model files: `<cache-dir>/<source>/<repository>/...`, one folder per repository
(two patterns of one repository share it), a manifest per cache key once its files are complete, and a
lock per folder that every gpustack process on the machine respects."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from gpustack.worker.files.download import PART_SUFFIX

STATE_DIR = ".gpustack"


@dataclass(frozen=True)
class Manifest:
    """A complete copy: what was downloaded for a cache key, and what the engine is given."""

    key: str
    folder: str
    files: list[str]  # names inside folder
    main: str  # the engine's model path
    parameters: list[str]  # engine parameters the source brings, with paths made absolute
    size: int


def folder_of(cache_dir: str, key: str) -> Path:
    """The repository's folder: the key without its last part (the file pattern, or the Ollama tag's)."""
    parts = [p for p in key.split("/")[:-1] if p not in ("", ".", "..")]
    if key.startswith("ollama_library/"):
        parts = [p for p in key.split("/") if p not in ("", ".", "..")]  # one folder per tag
    return Path(cache_dir, *parts)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def manifest_path(cache_dir: str, key: str) -> Path:
    return Path(cache_dir, STATE_DIR, "manifests", f"{_digest(key)}.json")


def lock_path(cache_dir: str, key: str) -> Path:
    path = Path(cache_dir, STATE_DIR, "locks", f"{_digest(str(folder_of(cache_dir, key)))}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def read_manifest(cache_dir: str, key: str) -> Manifest | None:
    """The manifest, if the key's files are complete and still all there."""
    try:
        data = json.loads(manifest_path(cache_dir, key).read_text())
        manifest = Manifest(**data)
    except (OSError, ValueError, TypeError):
        return None
    folder = Path(manifest.folder)
    if manifest.key != key or not all((folder / name).is_file() for name in manifest.files):
        return None
    return manifest


def write_manifest(cache_dir: str, manifest: Manifest) -> None:
    path = manifest_path(cache_dir, manifest.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(manifest), indent=1))
    os.replace(temporary, path)


def _manifests(cache_dir: str) -> list[Manifest]:
    found = []
    for path in Path(cache_dir, STATE_DIR, "manifests").glob("*.json"):
        try:
            found.append(Manifest(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return found


def remove(cache_dir: str, key: str) -> list[str]:
    """Remove a key's files (those no other key's manifest lists) and its partial downloads; the removed
    paths. Call under the folder's lock."""
    folder = folder_of(cache_dir, key)
    manifest = read_manifest(cache_dir, key)
    others = {
        os.path.join(m.folder, name) for m in _manifests(cache_dir) if m.key != key for name in m.files
    }
    removed: list[str] = []
    names = list(manifest.files) if manifest else []
    names += [str(p.relative_to(folder)) for p in folder.rglob(f"*{PART_SUFFIX}")] if folder.is_dir() else []
    for name in names:
        path = folder / name
        if str(path) in others or not path.exists():
            continue
        path.unlink()
        removed.append(str(path))
    manifest_path(cache_dir, key).unlink(missing_ok=True)
    # Empty folders up to the cache dir go too.
    for directory in sorted({p for p in folder.rglob("*") if p.is_dir()} | {folder}, reverse=True):
        try:
            directory.rmdir()
        except OSError:
            pass
    parent = folder.parent
    while parent != Path(cache_dir) and Path(cache_dir) in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    return removed


def free_bytes(path: Path) -> int:
    """Free space where `path` is (or would be created)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def bytes_on_disk(folder: Path, names: list[str]) -> int:
    """What is already there of these files, finished or partial."""
    total = 0
    for name in names:
        for candidate in (folder / name, folder / (name + PART_SUFFIX)):
            if candidate.is_file():
                total += candidate.stat().st_size
                break
    return total
