"""Model headers over HTTP range requests, for any source that lists its files with URLs; tensor data is
never downloaded.

A safetensors model costs config.json, the index when sharded, and one range request per shard (a
second only when a header is longer than the first 64 KiB). A GGUF header is read through a file-like
object that fetches 1 MiB ranges as the parser advances.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from gpustack.estimate.gguf import GGUFError, GGUFHeader, read_gguf_header_from, shard_paths
from gpustack.estimate.gguf_mmproj import is_projector
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
from gpustack.sources.base import RemoteFile, SourceError, SourceSettings
from gpustack.sources.http import PARALLEL, FetchStats, read_json, sync_client, unreachable
from gpustack.sources.selection import choose_projector, gguf_files

HEADER_PROBE = 64 * 1024  # one request covers the 8-byte length and most safetensors headers
CHUNK = 1 << 20  # GGUF read-ahead
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")


@dataclass(frozen=True)
class Listing:
    """A model's files as its source lists them: name → (URL, size when known), and how to ask."""

    where: str  # "huggingface Qwen/Qwen2.5-0.5B (revision main)"
    urls: Mapping[str, str]
    sizes: Mapping[str, int | None]
    headers: Mapping[str, str] = field(default_factory=dict)
    token_hint: str = "a token"
    endpoint_hint: str = "the endpoint"
    environ: Mapping[str, str] = field(default_factory=dict)

    def at(self, name: str) -> str:
        return f"{self.where}: {name}"


class Fetcher:
    """Range and JSON requests with errors that tell a person what to do; counts what it fetched."""

    def __init__(self, listing: Listing, client: httpx.Client, stats: FetchStats) -> None:
        self.listing = listing
        self.client = client
        self.stats = stats

    def _url(self, name: str) -> str:
        url = self.listing.urls.get(name)
        if url is None:
            raise SourceError(f"{self.listing.where} has no file {name}")
        return url

    def _fail(self, response: httpx.Response, name: str) -> SourceError:
        code = response.status_code
        if code in (401, 403):
            return SourceError(
                f"access denied to {self.listing.at(name)} (HTTP {code}): the repository is private or "
                f"gated; give {self.listing.token_hint} of an account that has access"
            )
        if code == 404:
            return SourceError(f"{self.listing.at(name)}: not found (HTTP 404)")
        return SourceError(f"{self.listing.at(name)}: HTTP {code}")

    def _send(self, url: str, name: str, headers: dict[str, str]) -> httpx.Response:
        try:
            request = self.client.build_request("GET", url, headers={**self.listing.headers, **headers})
            response = self.client.send(request, stream=True, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise unreachable(
                self.listing.at(name), url, exc, self.listing.environ, self.listing.endpoint_hint
            ) from None
        self.stats.add(requests=1)
        return response

    def json(self, name: str) -> Any:
        response = self._send(self._url(name), name, {})
        try:
            if response.status_code != 200:
                raise self._fail(response, name)
            return read_json(response, self.listing.at(name), self.stats)
        finally:
            response.close()

    def _body(self, response: httpx.Response, limit: int, name: str) -> bytes:
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            self.stats.add(received=len(chunk))
            if received > limit:
                raise SourceError(f"{self.listing.at(name)}: more bytes than the {limit} asked for")
            chunks.append(chunk)
        return b"".join(chunks)

    def range(self, name: str, start: int, length: int) -> tuple[bytes, int]:
        """Bytes [start, start + length) of a file and the file's size; never the whole of a larger file."""
        response = self._send(self._url(name), name, {"Range": f"bytes={start}-{start + length - 1}"})
        try:
            if response.status_code == 416:
                match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                size = int(match.group(3)) if match and match.group(3) != "*" else start
                return b"", size
            if response.status_code == 200:
                size_header = response.headers.get("content-length")
                if size_header is None or int(size_header) > start + length:
                    raise SourceError(
                        f"{self.listing.at(name)}: the server ignored the Range header and would send the "
                        f"whole file ({size_header or 'unknown'} bytes); refusing to download it. Use an "
                        "endpoint that supports range requests"
                    )
                whole = self._body(response, start + length, name)
                return whole[start : start + length], len(whole)
            if response.status_code != 206:
                raise self._fail(response, name)
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if not match or match.group(1) is None or int(match.group(1)) != start:
                raise SourceError(f"{self.listing.at(name)}: bad Content-Range in a 206 response")
            size = int(match.group(3)) if match.group(3) != "*" else -1
            return self._body(response, length, name), size
        finally:
            response.close()


class RangeFile:
    """A read-only file over HTTP range requests, reading ahead in CHUNK-sized pieces."""

    def __init__(self, fetcher: Fetcher, name: str) -> None:
        self._fetcher = fetcher
        self._name = name
        self._pos = 0
        self._buf_start = 0
        self._buf, self.size = fetcher.range(name, 0, CHUNK)
        if self.size < 0:
            raise SourceError(f"{fetcher.listing.at(name)}: the server did not say the file's size")

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
            self._buf, _ = self._fetcher.range(self._name, self._pos, max(n, CHUNK))
            self._buf_start = self._pos
        data = self._buf[self._pos - self._buf_start : end - self._buf_start]
        self._pos += len(data)
        return data


class RemoteReader:
    """ModelReader over a Listing: a GGUF file (`gguf`, its shards beside it) or a safetensors folder."""

    def __init__(
        self, listing: Listing, gguf: str | None = None, stats: FetchStats | None = None, folder: str = ""
    ) -> None:
        self.listing = listing
        self.gguf = gguf
        self.folder = folder.strip("/")
        self.stats = stats if stats is not None else FetchStats()
        self.where = listing.where if gguf is None else listing.at(gguf)

    def _with_client(self, work: Any) -> Any:
        with sync_client(self.listing.environ) as client:
            return work(Fetcher(self.listing, client, self.stats))

    def _header(self, fetcher: Fetcher, name: str) -> GGUFHeader:
        file = RangeFile(fetcher, name)
        try:
            return read_gguf_header_from(file, self.listing.at(name), file.size)  # type: ignore[arg-type]
        except GGUFError as exc:
            raise SourceError(str(exc)) from None

    def gguf_shards(self) -> list[GGUFHeader]:
        if self.gguf is None:
            raise SourceError(f"{self.listing.where}: name the .gguf file to run")
        name = self.gguf

        def work(fetcher: Fetcher) -> list[GGUFHeader]:
            first = self._header(fetcher, name)
            count = int(first.get("split.count") or 1)
            if count <= 1:
                return [first]
            try:
                names = shard_paths(name, count)
            except GGUFError as exc:
                raise SourceError(str(exc)) from None
            return [first if n == name else self._header(fetcher, n) for n in names]

        result: list[GGUFHeader] = self._with_client(work)
        return result

    def projector(self, mmproj: str | None, no_mmproj: bool) -> GGUFHeader | None:
        if no_mmproj or self.gguf is None:
            return None
        names = list(self.listing.urls)
        if mmproj:
            candidate = posixpath.join(posixpath.dirname(self.gguf), mmproj)
            name: str | None = candidate if candidate in self.listing.urls else None
            if name is None:
                raise SourceError(f"--mmproj {mmproj}: {self.listing.where} has no such file by the model")
        else:
            name = choose_projector(names, self.gguf)
        if name is None:
            return None
        chosen = name
        header: GGUFHeader = self._with_client(lambda fetcher: self._header(fetcher, chosen))
        if not is_projector(header):
            raise SourceError(f"{self.listing.at(chosen)} is not a multimodal projector")
        return header

    def _in_folder(self, name: str) -> str:
        return posixpath.join(self.folder, name) if self.folder else name

    def safetensors(self) -> ModelFiles:
        def work(fetcher: Fetcher) -> ModelFiles:
            config_name = self._in_folder(CONFIG_FILE)
            if config_name not in self.listing.urls:
                raise SourceError(
                    f"{self.listing.where} has no config.json; is it a safetensors model? For a GGUF "
                    "repository, name the .gguf file (a pattern such as *Q4_K_M.gguf works)"
                )
            config = fetcher.json(config_name)
            index = self._in_folder(INDEX_FILE)
            if index in self.listing.urls:
                try:
                    names = [self._in_folder(n) for n in shard_names(fetcher.json(index), index)]
                except SafetensorsError as exc:
                    raise SourceError(str(exc)) from None
            else:
                names = sorted(
                    n
                    for n in self.listing.urls
                    if n.endswith(".safetensors") and posixpath.dirname(n) == self.folder
                )
            if not names:
                raise SourceError(f"{self.listing.where} has no *.safetensors files")
            with ThreadPoolExecutor(max_workers=min(PARALLEL, len(names))) as pool:
                headers = list(pool.map(lambda n: _read_shard_header(fetcher, n), names))
            tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
            for header in headers:
                tensors.update(header)
            total = sum(tensor_bytes(d, s) for d, s in tensors.values())
            return ModelFiles(
                config=config, tensors=tensors, total_bytes=total, source=self.where, files=names
            )

        result: ModelFiles = self._with_client(work)
        return result

    def weights_bytes(self) -> int:
        weights = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".onnx")
        return sum(size or 0 for name, size in self.listing.sizes.items() if name.endswith(weights))


def repo_reader(
    where: str,
    files: Mapping[str, RemoteFile],
    pattern: str | None,
    settings: SourceSettings,
    token_hint: str,
    endpoint_hint: str,
) -> RemoteReader:
    """The reader of a listed repository: the GGUF that `pattern` picks, or the safetensors folder when
    there is no pattern. Every file is asked for with the first file's headers (the token)."""
    first = next(iter(files.values()), None)
    listing = Listing(
        where=where,
        urls={name: f.url for name, f in files.items()},
        sizes={name: f.size for name, f in files.items()},
        headers=dict(first.headers) if first is not None else {},
        token_hint=token_hint,
        endpoint_hint=endpoint_hint,
        environ=settings.environ,
    )
    main = gguf_files(list(files), pattern, where)[0] if pattern else None
    return RemoteReader(listing, main)


class LazyReader:
    """A ModelReader that opens its RemoteReader (listing a source costs requests) on first use."""

    def __init__(self, where: str, open_reader: Callable[[], RemoteReader]) -> None:
        self.where = where
        self._open = open_reader
        self._reader: RemoteReader | None = None

    def _get(self) -> RemoteReader:
        if self._reader is None:
            self._reader = self._open()
        return self._reader

    def gguf_shards(self) -> Any:
        return self._get().gguf_shards()

    def projector(self, mmproj: str | None, no_mmproj: bool) -> Any:
        return self._get().projector(mmproj, no_mmproj)

    def safetensors(self) -> Any:
        return self._get().safetensors()

    def weights_bytes(self) -> int:
        return self._get().weights_bytes()


def _read_shard_header(fetcher: Fetcher, name: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    where = fetcher.listing.at(name)
    first, size = fetcher.range(name, 0, HEADER_PROBE)
    try:
        length = header_length(first, where, size if size >= 0 else None)
        raw = first[8 : 8 + length]
        if len(raw) < length:
            rest, _ = fetcher.range(name, 8 + len(raw), length - len(raw))
            raw += rest
        if len(raw) < length:
            raise SafetensorsError(f"{where}: header is truncated ({len(raw)} of {length} bytes)")
        return parse_header(raw, where, size if size >= 0 else None)
    except SafetensorsError as exc:
        raise SourceError(str(exc)) from None
