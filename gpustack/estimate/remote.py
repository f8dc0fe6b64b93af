"""Model headers from Hugging Face or ModelScope over HTTP range requests; tensor data is never downloaded.

A safetensors model costs one file-list request, config.json, the index when sharded, and one range
request per shard (a second only when a header is longer than the first 64 KiB). A GGUF header is read
through a file-like object that fetches 1 MiB ranges as the parser advances.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from gpustack.estimate.gguf import GGUFHeader, read_gguf_header_from
from gpustack.estimate.safetensors import (
    CONFIG_FILE,
    INDEX_FILE,
    ModelFiles,
    SafetensorsError,
    header_length,
    parse_header,
    shard_names,
    tensor_bytes,
)

Source = Literal["huggingface", "modelscope"]
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_MODELSCOPE_ENDPOINT = "https://www.modelscope.cn"
HEADER_PROBE = 64 * 1024  # one request covers the 8-byte length and most headers
CHUNK = 1 << 20  # GGUF read-ahead
MAX_JSON_BYTES = 32 << 20  # config.json / index / file list larger than this is not what we asked for
_PARALLEL = 8
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")


class RemoteModelError(ValueError):
    """A remote model that cannot be read; the message names the repository and file and says what to do."""


@dataclass
class FetchStats:
    """What reading a remote model cost: requests made and body bytes received."""

    requests: int = 0
    bytes: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, requests: int = 0, received: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += received


@dataclass(frozen=True)
class Hub:
    """Where a repository's files live and how to ask for them."""

    source: Source
    repo: str
    revision: str
    endpoint: str
    token: str | None

    @classmethod
    def resolve(
        cls, repo: str, source: Source, revision: str | None, token: str | None, endpoint: str | None
    ) -> Hub:
        """Fill endpoint and token from the environment the hubs' own clients read (HF_ENDPOINT, ...)."""
        if source == "huggingface":
            endpoint = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT
            token = token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
            revision = revision or "main"
        elif source == "modelscope":
            endpoint = (
                endpoint or os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN")
            )
            endpoint = endpoint or DEFAULT_MODELSCOPE_ENDPOINT
            token = token or os.environ.get("MODELSCOPE_API_TOKEN")
            revision = revision or "master"
        else:
            raise RemoteModelError(f"unknown model source {source!r}: use huggingface or modelscope")
        if not endpoint.startswith(("http://", "https://")):
            endpoint = "https://" + endpoint
        repo = repo.strip().strip("/")
        if repo.count("/") != 1:
            raise RemoteModelError(f"{repo!r} is not a repository id: expected <owner>/<name>")
        return cls(source, repo, revision, endpoint.rstrip("/"), token)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def file_url(self, filename: str) -> str:
        if self.source == "huggingface":
            return f"{self.endpoint}/{self.repo}/resolve/{quote(self.revision, safe='')}/{quote(filename)}"
        return (
            f"{self.endpoint}/api/v1/models/{self.repo}/repo"
            f"?Revision={quote(self.revision, safe='')}&FilePath={quote(filename, safe='')}"
        )

    def list_url(self) -> str:
        if self.source == "huggingface":
            return f"{self.endpoint}/api/models/{self.repo}/revision/{quote(self.revision, safe='')}"
        return (
            f"{self.endpoint}/api/v1/models/{self.repo}/repo/files"
            f"?Revision={quote(self.revision, safe='')}&Recursive=true"
        )

    def where(self, filename: str | None = None) -> str:
        name = f"{self.repo}/{filename}" if filename else self.repo
        return f"{self.source} {name} (revision {self.revision})"


class _Fetcher:
    """HTTP calls with errors that tell a person what to do; counts what it fetched."""

    def __init__(self, hub: Hub, client: httpx.Client, stats: FetchStats) -> None:
        self.hub = hub
        self.client = client
        self.stats = stats

    def _fail(self, response: httpx.Response, filename: str | None) -> RemoteModelError:
        where = self.hub.where(filename)
        code = response.status_code
        if code == 404:
            return RemoteModelError(
                f"no such repository or file: {where} on {self.hub.endpoint}; check the name and revision;"
                " private repos need a token"
            )
        if code in (401, 403):
            hint = "HF_TOKEN" if self.hub.source == "huggingface" else "MODELSCOPE_API_TOKEN"
            return RemoteModelError(
                f"access denied to {where} (HTTP {code}): the repository does not exist, is private or is"
                f" gated; pass a token ({hint}) of an account that has access"
            )
        return RemoteModelError(f"{where}: HTTP {code} from {self.hub.endpoint}")

    def _send(self, url: str, filename: str | None, headers: dict[str, str]) -> httpx.Response:
        try:
            request = self.client.build_request("GET", url, headers={**self.hub.headers, **headers})
            response = self.client.send(request, stream=True, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise RemoteModelError(
                f"{self.hub.where(filename)}: cannot reach {self.hub.endpoint} ({exc}); check the network"
                " or the endpoint (HF_ENDPOINT / MODELSCOPE_DOMAIN)"
            ) from exc
        self.stats.add(requests=1)
        return response

    def _body(self, response: httpx.Response, limit: int, filename: str | None) -> bytes:
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            self.stats.add(received=len(chunk))
            if received > limit:
                response.close()
                raise RemoteModelError(f"{self.hub.where(filename)}: response larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def json(self, url: str, filename: str | None) -> Any:
        response = self._send(url, filename, {})
        try:
            if response.status_code != 200:
                raise self._fail(response, filename)
            body = self._body(response, MAX_JSON_BYTES, filename)
        finally:
            response.close()
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RemoteModelError(f"{self.hub.where(filename)}: not valid JSON ({exc})") from exc

    def range(self, filename: str, start: int, length: int) -> tuple[bytes, int]:
        """Bytes [start, start + length) of a file and the file's size; never the whole of a larger file."""
        url = self.hub.file_url(filename)
        response = self._send(url, filename, {"Range": f"bytes={start}-{start + length - 1}"})
        try:
            if response.status_code == 416:
                match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                size = int(match.group(3)) if match and match.group(3) != "*" else start
                return b"", size
            if response.status_code == 200:
                size_header = response.headers.get("content-length")
                if size_header is None or int(size_header) > start + length:
                    raise RemoteModelError(
                        f"{self.hub.where(filename)}: {self.hub.endpoint} ignored the Range header and would"
                        f" send the whole file ({size_header or 'unknown'} bytes); refusing to download it."
                        " Use an endpoint that supports range requests"
                    )
                whole = self._body(response, start + length, filename)
                return whole[start : start + length], len(whole)
            if response.status_code != 206:
                raise self._fail(response, filename)
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if not match or match.group(1) is None or int(match.group(1)) != start:
                raise RemoteModelError(f"{self.hub.where(filename)}: bad Content-Range in a 206 response")
            size = int(match.group(3)) if match.group(3) != "*" else -1
            return self._body(response, length, filename), size
        finally:
            response.close()


def _list_files(fetcher: _Fetcher) -> dict[str, int | None]:
    """File name → size (when the hub says) for the whole repository at that revision."""
    hub = fetcher.hub
    listing = fetcher.json(hub.list_url(), None)
    files: dict[str, int | None] = {}
    if hub.source == "huggingface":
        siblings = listing.get("siblings") if isinstance(listing, dict) else None
        for sibling in siblings if isinstance(siblings, list) else []:
            if isinstance(sibling, dict) and sibling.get("rfilename"):
                size = sibling.get("size")
                files[str(sibling["rfilename"])] = int(size) if isinstance(size, int) else None
        return files
    data = listing.get("Data") if isinstance(listing, dict) else None
    if not isinstance(data, dict) or (listing.get("Code") not in (None, 200)):
        message = listing.get("Message") if isinstance(listing, dict) else ""
        raise RemoteModelError(
            f"no such repository: {hub.where()} on {hub.endpoint} ({message}); check the name"
        )
    for entry in data.get("Files") or []:
        if isinstance(entry, dict) and entry.get("Type", "blob") == "blob" and entry.get("Path"):
            size = entry.get("Size")
            files[str(entry["Path"])] = int(size) if isinstance(size, int) else None
    return files


def _read_shard_header(fetcher: _Fetcher, filename: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    name = fetcher.hub.where(filename)
    first, size = fetcher.range(filename, 0, HEADER_PROBE)
    try:
        length = header_length(first, name, size if size >= 0 else None)
        raw = first[8 : 8 + length]
        if len(raw) < length:
            rest, _ = fetcher.range(filename, 8 + len(raw), length - len(raw))
            raw += rest
        if len(raw) < length:
            raise SafetensorsError(f"{name}: header is truncated ({len(raw)} of {length} bytes)")
        return parse_header(raw, name, size if size >= 0 else None)
    except SafetensorsError as exc:
        raise RemoteModelError(str(exc)) from exc


def _with_client(
    hub: Hub, client: httpx.Client | None, stats: FetchStats | None, work: Callable[[_Fetcher], Any]
) -> Any:
    stats = stats if stats is not None else FetchStats()
    if client is not None:
        return work(_Fetcher(hub, client, stats))
    limits = httpx.Limits(max_connections=_PARALLEL, max_keepalive_connections=_PARALLEL)
    with httpx.Client(timeout=_TIMEOUT, limits=limits, trust_env=True) as own:
        return work(_Fetcher(hub, own, stats))


def read_remote_model(
    repo: str,
    source: Source = "huggingface",
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    *,
    client: httpx.Client | None = None,
    stats: FetchStats | None = None,
) -> ModelFiles:
    """config.json and every safetensors header of a hub repository, by range requests.

    revision defaults to the hub's default branch (main on Hugging Face, master on ModelScope).
    """
    hub = Hub.resolve(repo, source, revision, token, endpoint)

    def work(fetcher: _Fetcher) -> ModelFiles:
        files = _list_files(fetcher)
        if CONFIG_FILE not in files:
            raise RemoteModelError(f"{hub.where()} has no config.json; is it a safetensors model repository?")
        config = fetcher.json(hub.file_url(CONFIG_FILE), CONFIG_FILE)
        if INDEX_FILE in files:
            try:
                names = shard_names(fetcher.json(hub.file_url(INDEX_FILE), INDEX_FILE), hub.where(INDEX_FILE))
            except SafetensorsError as exc:
                raise RemoteModelError(str(exc)) from exc
        else:
            names = sorted(n for n in files if n.endswith(".safetensors") and "/" not in n)
        if not names:
            raise RemoteModelError(f"{hub.where()} has no *.safetensors files; for GGUF repos name the file")
        with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(names))) as pool:
            headers = list(pool.map(lambda n: _read_shard_header(fetcher, n), names))
        tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
        for header in headers:
            tensors.update(header)
        total = sum(tensor_bytes(d, s) for d, s in tensors.values())
        source_name = f"{hub.source}:{hub.repo}@{hub.revision}"
        return ModelFiles(config=config, tensors=tensors, total_bytes=total, source=source_name, files=names)

    result: ModelFiles = _with_client(hub, client, stats, work)
    return result


class RangeFile:
    """A read-only file over HTTP range requests, reading ahead in CHUNK-sized pieces."""

    def __init__(self, fetcher: _Fetcher, filename: str) -> None:
        self._fetcher = fetcher
        self._filename = filename
        self._pos = 0
        self._buf = b""
        self._buf_start = 0
        self._buf, self.size = fetcher.range(filename, 0, CHUNK)
        if self.size < 0:
            raise RemoteModelError(f"{fetcher.hub.where(filename)}: the server did not say the file's size")

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.size - self._pos
        n = min(n, self.size - self._pos)
        if n <= 0:
            return b""
        end = self._pos + n
        if not (self._buf_start <= self._pos and end <= self._buf_start + len(self._buf)):
            self._buf, _ = self._fetcher.range(self._filename, self._pos, max(n, CHUNK))
            self._buf_start = self._pos
        data = self._buf[self._pos - self._buf_start : end - self._buf_start]
        self._pos += len(data)
        return data


def read_remote_gguf_header(
    repo: str,
    filename: str,
    source: Source = "huggingface",
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    *,
    client: httpx.Client | None = None,
    stats: FetchStats | None = None,
) -> GGUFHeader:
    """The header of one GGUF file in a hub repository, by range requests (a few for a big vocabulary)."""
    hub = Hub.resolve(repo, source, revision, token, endpoint)

    def work(fetcher: _Fetcher) -> GGUFHeader:
        file = RangeFile(fetcher, filename)
        return read_gguf_header_from(file, hub.where(filename), file.size)  # type: ignore[arg-type]

    header: GGUFHeader = _with_client(hub, client, stats, work)
    return header
