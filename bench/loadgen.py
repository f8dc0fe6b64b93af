"""A lean HTTP/1.1 load generator for the gateway benchmarks: keep-alive connections driven by asyncio
protocols, so that the client costs little of the CPU it shares with what it measures.

Each request records when it was sent, when the response head arrived, when the first body byte arrived
(a stream's first event) and when the body ended. Used by bench/gateway.py and bench/spike.py.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    status: int = 0
    started: float = 0.0
    first_byte: float = 0.0  # first body byte, seconds after `started`
    total: float = 0.0  # end of the body, seconds after `started`
    body_bytes: int = 0
    error: str = ""


class _ResponseParser:
    """Incremental parse of one response: head, then a Content-Length or chunked body."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.status = 0
        self.length: int | None = None
        self.chunked = False
        self.head_done = False
        self.chunk_left = -1  # -1: reading a chunk-size line; -2: reading the trailer
        self.body_bytes = 0
        self.done = False
        self.keep_alive = True
        self.tail = bytearray()  # the last bytes of the body, for checks such as an error event

    def feed(self, data: bytes) -> int:
        """Take `data`; returns how many body bytes it held."""
        self.buffer += data
        before = self.body_bytes
        if not self.head_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return 0
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            del self.buffer[: end + 4]
            self.status = int(head[0].split(" ", 2)[1])
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    self.length = int(value.strip())
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
                elif name == "connection" and value.strip().lower() == "close":
                    self.keep_alive = False
            self.head_done = True
        if self.chunked:
            self._chunks()
        else:
            take = (
                len(self.buffer)
                if self.length is None
                else min(len(self.buffer), self.length - self.body_bytes)
            )
            self._body(bytes(self.buffer[:take]))
            del self.buffer[:take]
            if self.length is not None and self.body_bytes >= self.length:
                self.done = True
        return self.body_bytes - before

    def _body(self, data: bytes) -> None:
        self.body_bytes += len(data)
        self.tail = (self.tail + data)[-512:]

    def _chunks(self) -> None:
        # chunk_left: -1 reading a size line, -2 reading the trailer, -3 the CRLF after data, n >= 0 data
        while True:
            if self.chunk_left in (-1, -2, -3):
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                if self.chunk_left == -3:
                    self.chunk_left = -1
                elif self.chunk_left == -2:
                    if not line:
                        self.done = True
                        return
                else:
                    size = int(line.split(b";")[0], 16)
                    self.chunk_left = size if size else -2
            else:
                if not self.buffer:
                    return
                take = min(self.chunk_left, len(self.buffer))
                self._body(bytes(self.buffer[:take]))
                del self.buffer[:take]
                self.chunk_left -= take
                if self.chunk_left == 0:
                    self.chunk_left = -3


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: _ResponseParser | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.result: Result | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        parser, result = self.parser, self.result
        if parser is None or result is None:
            return
        if parser.feed(data) and not result.first_byte:
            result.first_byte = time.perf_counter() - result.started
        if parser.done:
            self._finish("")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.parser is not None and not self.parser.done:
            if self.parser.head_done and self.parser.length is None and not self.parser.chunked:
                self._finish("")  # a body that ends with the connection
            else:
                self._finish(f"connection lost: {exc or 'closed by the server'}")

    def _finish(self, error: str) -> None:
        result, parser = self.result, self.parser
        if result is not None and parser is not None:
            result.total = time.perf_counter() - result.started
            result.status = parser.status
            result.body_bytes = parser.body_bytes
            result.error = error
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Connection:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.protocol: _Client | None = None

    async def request(self, raw: bytes, timeout: float = 120.0) -> Result:
        loop = asyncio.get_running_loop()
        result = Result(started=time.perf_counter())
        try:
            if self.protocol is None or self.protocol.lost:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(_Client, self.host, self.port), timeout
                )
                self.protocol = protocol
            protocol = self.protocol
            protocol.parser = _ResponseParser()
            protocol.result = result
            protocol.waiter = loop.create_future()
            result.started = time.perf_counter()
            assert protocol.transport is not None
            protocol.transport.write(raw)
            await asyncio.wait_for(protocol.waiter, timeout)
            if not protocol.parser.keep_alive and protocol.transport is not None:
                protocol.transport.close()
                self.protocol = None
        except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            result.total = time.perf_counter() - result.started
            if self.protocol is not None and self.protocol.transport is not None:
                self.protocol.transport.close()
            self.protocol = None
        return result

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()


def post(host: str, port: int, path: str, payload: dict, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of a POST with a JSON body."""
    body = json.dumps(payload).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if not r.error and r.status == 200]

    @property
    def failed(self) -> int:
        return len(self.results) - len(self.ok)

    def statuses(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for r in self.results:
            key = r.error.split(":")[0] if r.error else str(r.status)
            found[key] = found.get(key, 0) + 1
        return found

    def rate(self) -> float:
        return len(self.ok) / self.seconds if self.seconds else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def closed_loop(
    host: str, port: int, raw: bytes, concurrency: int, *, requests: int = 0, seconds: float = 0.0
) -> Run:
    """`concurrency` connections each sending `raw` again as soon as its answer ends, for `requests` in
    all or for `seconds`."""
    run = Run()
    sent = 0
    deadline = time.perf_counter() + seconds if seconds else None

    async def user() -> None:
        nonlocal sent
        connection = Connection(host, port)
        try:
            while True:
                if requests and sent >= requests:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                sent += 1
                run.results.append(await connection.request(raw))
        finally:
            connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - start
    return run


async def burst(host: str, port: int, raw: bytes, count: int, timeout: float = 300.0) -> Run:
    """`count` requests at once, each on its own connection (a spike of slow streams)."""
    run = Run()
    start = time.perf_counter()

    async def one() -> Result:
        connection = Connection(host, port)
        try:
            return await connection.request(raw, timeout)
        finally:
            connection.close()

    run.results = list(await asyncio.gather(*(one() for _ in range(count))))
    run.seconds = time.perf_counter() - start
    return run
