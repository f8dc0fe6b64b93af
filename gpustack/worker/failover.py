"""A worker's HTTP client for the servers of one cluster: requests go to one server until it cannot be
reached, then to the next, which stays in use. With one server it is a plain client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from gpustack.utils.errors import describe_error

logger = logging.getLogger(__name__)

# Answers that come from a server, or a proxy in front of it, that cannot serve now: another may.
_UNAVAILABLE = frozenset({502, 503, 504})


class FailoverClient:
    def __init__(self, urls: str | Sequence[str], timeout: httpx.Timeout, verify: bool = True) -> None:
        listed = [urls] if isinstance(urls, str) else list(urls)
        if not listed:
            raise ValueError("at least one server URL is needed")
        self.urls = [url.rstrip("/") for url in listed]
        self._current = 0
        self._http = httpx.AsyncClient(timeout=timeout, verify=verify)

    @property
    def current(self) -> str:
        """The server requests go to now."""
        return self.urls[self._current]

    async def aclose(self) -> None:
        await self._http.aclose()

    def _move_on(self, failed: str, why: str) -> None:
        """Use the next server after `failed`, unless another request has moved on already."""
        if len(self.urls) == 1 or self.current != failed:
            return
        self._current = (self._current + 1) % len(self.urls)
        logger.warning("server %s %s; using %s from now on", failed, why, self.current)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """`method path` at the current server; on to the next when it cannot be reached or cannot serve.
        Raises the last transport error, or returns the last answer, when none can."""
        for attempt in range(len(self.urls)):
            url = self.current
            last = attempt == len(self.urls) - 1
            try:
                response = await self._http.request(method, url + path, **kwargs)
            except httpx.TransportError as exc:
                self._move_on(url, f"cannot be reached ({describe_error(exc)})")
                if last:
                    raise
                continue
            if response.status_code in _UNAVAILABLE and not last:
                self._move_on(url, f"answered HTTP {response.status_code}")
                continue
            return response
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    @asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """A streamed response from the first server that answers; a stream that breaks off moves the
        next one (a reconnect) on to the next server."""
        for attempt in range(len(self.urls)):
            url = self.current
            last = attempt == len(self.urls) - 1
            request = self._http.build_request(method, url + path, **kwargs)
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                self._move_on(url, f"cannot be reached ({describe_error(exc)})")
                if last:
                    raise
                continue
            try:
                if response.status_code in _UNAVAILABLE and not last:
                    self._move_on(url, f"answered HTTP {response.status_code}")
                    continue
                try:
                    yield response
                except httpx.TransportError as exc:
                    self._move_on(url, f"broke off a stream ({describe_error(exc)})")
                    raise
                return
            finally:
                await response.aclose()
