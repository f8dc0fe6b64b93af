"""A local path that exists only on workers: the server lists it on a worker that has it and reads its
headers by range requests through that worker's API (worker/files/api.py), instead of leaving the
instance pending because the server's own disk lacks the file."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from gpustack.sources.base import ModelReader, SourceError
from gpustack.sources.remote_reader import Listing, RemoteReader

_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


@dataclass(frozen=True)
class WorkerEndpoint:
    name: str
    url: str  # http://<ip>:<port>
    credential: str


def _listing(worker: WorkerEndpoint, path: str) -> tuple[str, dict[str, int]] | None:
    """(the folder listed, relative name → size) of the path on that worker; None where it is absent."""
    headers = {"Authorization": f"Bearer {worker.credential}"}
    try:
        response = httpx.get(
            f"{worker.url}/model-files/listing", params={"path": path}, headers=headers, timeout=_TIMEOUT
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    body = response.json()
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict) or not isinstance(body.get("folder"), str):
        return None
    return body["folder"], {str(k): int(v) for k, v in files.items() if isinstance(v, int)}


def read_on_workers(path: str, workers: tuple[WorkerEndpoint, ...]) -> ModelReader:
    """A reader over the first worker that has `path` (a .gguf file, or a safetensors folder)."""
    for worker in workers:
        found = _listing(worker, path)
        if found is None:
            continue
        folder, files = found
        where = f"{path} on worker {worker.name}"
        urls = {
            name: f"{worker.url}/model-files/raw?path={quote(posixpath.join(folder, name), safe='')}"
            for name in files
        }
        listing = Listing(
            where=where,
            urls=urls,
            sizes=dict(files),
            headers={"Authorization": f"Bearer {worker.credential}"},
            token_hint="the worker's credential",
            endpoint_hint="the worker's address",
        )
        gguf = posixpath.basename(path) if path.lower().endswith(".gguf") else None
        return RemoteReader(listing, gguf)
    names = ", ".join(w.name for w in workers) or "none is ready"
    raise SourceError(
        f"cannot read {path}: it is neither on the server nor on a ready worker (asked: {names}); put the "
        "model at this absolute path on the workers that may run it"
    )
