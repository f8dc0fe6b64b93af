"""HTTP for the sources: clients that honour the proxy variables, and errors that say what to do."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from gpustack.sources.base import SourceError
from gpustack.sources.proxies import describe_proxy, proxy_for, routing_transport

TIMEOUT = httpx.Timeout(30.0, connect=10.0)
MAX_JSON_BYTES = 32 << 20  # a file list, config or manifest larger than this is not what we asked for
PARALLEL = 8


def sync_client(environ: Mapping[str, str]) -> httpx.Client:
    limits = httpx.Limits(max_connections=PARALLEL, max_keepalive_connections=PARALLEL)
    transport = routing_transport(httpx, environ, asynchronous=False, limits=limits)
    return httpx.Client(timeout=TIMEOUT, transport=transport, trust_env=False, follow_redirects=True)


def async_client(environ: Mapping[str, str], limits: httpx.Limits | None = None) -> httpx.AsyncClient:
    transport = routing_transport(httpx, environ, asynchronous=True, limits=limits or httpx.Limits())
    return httpx.AsyncClient(timeout=TIMEOUT, transport=transport, trust_env=False, follow_redirects=True)


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


def unreachable(where: str, url: str, exc: Exception, environ: Mapping[str, str], hint: str) -> SourceError:
    """A connection failure, naming the proxy it went through (or that it went direct)."""
    route = describe_proxy(proxy_for(url, environ))
    return SourceError(
        f"{where}: cannot reach {httpx.URL(url).host} ({type(exc).__name__}: {exc}; connection: {route}); "
        f"check the network, the proxy variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) or {hint}"
    )


def read_json(response: httpx.Response, where: str, stats: FetchStats | None = None) -> Any:
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_bytes():
        received += len(chunk)
        if stats is not None:
            stats.add(received=len(chunk))
        if received > MAX_JSON_BYTES:
            raise SourceError(f"{where}: the answer is larger than {MAX_JSON_BYTES} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{where}: not valid JSON ({exc})") from None
