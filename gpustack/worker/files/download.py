"""One file from a hub into the cache: resumed from its `.part` with an HTTP range after a kill or a dropped
connection, checked against the sha256 the hub gives, and renamed into place only when whole and right.

Blocking (run it in a thread): a plain client in a thread moves bytes faster than an event loop, and the
hashing of the bytes already on disk is no work for the event loop either.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gpustack.sources.base import RemoteFile
from gpustack.sources.http import TIMEOUT
from gpustack.sources.proxies import describe_proxy, proxy_for, routing_transport

PART_SUFFIX = ".part"
BLOCK = 1 << 20
# A dropped connection is retried from where it stopped, this many times in a row without progress.
RETRIES = 5
RETRY_PAUSE_SECONDS = 1.0


class DownloadError(Exception):
    """A file could not be fetched or was wrong; the message names it and says what happened."""


class Cancelled(DownloadError):
    """The download was stopped on purpose (the worker is shutting down, or the files were removed)."""


@dataclass
class Progress:
    """Bytes on disk across the files of one download, shared between the downloading thread and the
    event loop that reports it."""

    total: int = 0
    done: int = 0
    fetched: int = 0  # received over the network in this run (the rest was resumed from disk)
    cancelled: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, done: int, fetched: int = 0) -> None:
        with self._lock:
            self.done += done
            self.fetched += fetched


def client(environ: Mapping[str, str]) -> httpx.Client:
    """A client for downloads that routes through the proxies the environment names."""
    transport = routing_transport(httpx, environ, asynchronous=False)
    return httpx.Client(timeout=TIMEOUT, transport=transport, trust_env=False, follow_redirects=True)


def _hash_existing(path: Path, digest: hashlib._Hash, progress: Progress) -> int:
    size = 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK * 8):
            digest.update(block)
            size += len(block)
            if progress.cancelled.is_set():
                raise Cancelled(f"{path.name}: stopped")
    return size


@dataclass
class _Part:
    """The `.part` on disk: its length and the hash of those bytes, kept equal as blocks are written, so
    that a request that fails midway leaves both true for the next one."""

    path: Path
    have: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def reset(self, progress: Progress) -> None:
        progress.add(-self.have)
        self.have, self.digest = 0, hashlib.sha256()


def download_file(
    file: RemoteFile, target: Path, http: httpx.Client, progress: Progress, environ: Mapping[str, str]
) -> None:
    """Fetch `file` to `target` (its folder exists). A finished target is left alone."""
    if target.is_file() and (file.size is None or target.stat().st_size == file.size):
        progress.add(target.stat().st_size)
        return
    part = _Part(target.with_name(target.name + PART_SUFFIX))
    if part.path.is_file():
        part.have = _hash_existing(part.path, part.digest, progress)
        progress.add(part.have)
        if file.size is not None and part.have > file.size:
            part.reset(progress)
    failures = 0
    while True:
        before = part.have
        try:
            if _fetch(file, part, http, progress):
                break
        except httpx.HTTPError as exc:
            if progress.cancelled.is_set():
                raise Cancelled(f"{file.name}: stopped") from None
            failures = 0 if part.have > before else failures + 1
            if failures > RETRIES:
                route = describe_proxy(proxy_for(file.url, environ))
                raise DownloadError(
                    f"{file.name}: the connection failed {failures} times without progress "
                    f"({type(exc).__name__}: {exc}; connection: {route}); {part.have} bytes are kept and "
                    "the next attempt resumes from there"
                ) from None
            time.sleep(RETRY_PAUSE_SECONDS)
    if file.sha256 is not None and part.digest.hexdigest() != file.sha256.lower():
        part.path.unlink(missing_ok=True)
        progress.add(-part.have)
        raise DownloadError(
            f"{file.name}: checksum mismatch (sha256 {part.digest.hexdigest()}, the hub says {file.sha256}); "
            "the damaged copy was removed and the next attempt downloads it again"
        )
    os.replace(part.path, target)


def _fetch(file: RemoteFile, part: _Part, http: httpx.Client, progress: Progress) -> bool:
    """One request from the end of the part on; whether the file is complete."""
    headers = dict(file.headers)
    if part.have:
        headers["Range"] = f"bytes={part.have}-"
    with http.stream("GET", file.url, headers=headers) as response:
        if response.status_code == 416 and part.have and file.size in (None, part.have):
            return True
        if response.status_code == 200 and part.have:
            part.reset(progress)  # the server ignored the range: start over rather than append again
        elif response.status_code not in (200, 206):
            raise DownloadError(_status_message(file, response.status_code))
        with open(part.path, "r+b" if part.have else "wb") as out:
            out.seek(part.have)
            out.truncate()
            for block in response.iter_bytes():  # as received: a drop loses only what is in flight
                if progress.cancelled.is_set():
                    raise Cancelled(f"{file.name}: stopped")
                out.write(block)
                part.digest.update(block)
                part.have += len(block)
                progress.add(len(block), len(block))
    return file.size is None or part.have >= file.size


def _status_message(file: RemoteFile, status: int) -> str:
    if status in (401, 403):
        return f"{file.name}: access denied (HTTP {status}); the repository is private or gated: give a token"
    if status == 404:
        return f"{file.name}: not found (HTTP 404) at {httpx.URL(file.url).copy_with(query=None)}"
    return f"{file.name}: HTTP {status} from {httpx.URL(file.url).host}"
