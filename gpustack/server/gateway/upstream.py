"""The gateway's HTTP/1.1 client to engines (and to workers' proxies): pooled keep-alive connections,
responses parsed by httptools (llhttp, in C), bodies streamed both ways, and an engine that sends faster
than our client reads paused instead of buffered.

Built for the hot path rather than taken from httpx, which costs several times more CPU per request: a
request is one write of a prepared head, a response one parse in C and a queue of chunks.

Failures say how far the request got, which decides what the gateway may do next:
`ConnectFailed` (nothing was sent: another instance can take it), `NoResponse` (sent, but the connection
closed before any answer: on a reused keep-alive connection, the engine had closed it while idle, and a
fresh connection is tried once), `BrokeOff` (the body stopped midway: only the client can be told).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterable, AsyncIterator

import httptools

# Above this many unread bytes from an engine, stop reading its socket until our client catches up.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
# Engines (uvicorn, cpp-httplib) close keep-alive connections idle for 5 s: older ones are not reused.
_IDLE_SECONDS = 4.0
_MAX_IDLE_PER_ADDRESS = 512


class UpstreamError(Exception):
    """The upstream could not be used; the message says why, in words for a log or a client."""


class ConnectFailed(UpstreamError):
    """No connection: nothing reached the upstream."""


class NoResponse(UpstreamError):
    """The request was (perhaps partly) sent; the connection closed before a response head."""


class BrokeOff(UpstreamError):
    """The response body ended before it was complete."""


class _Connection(asyncio.Protocol):
    """One connection and the response currently read on it."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.keep_alive = True

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokeOff(f"the engine's answer is not valid HTTP ({exc})"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._can_write.set()
        if self.complete:
            return
        if not self.head.done():
            reason = f": {exc}" if exc else ""
            self._fail(NoResponse(f"the connection closed before an answer{reason}"))
        elif not self._has_length:
            self.on_message_complete()  # a body that ends with the connection (no length, not chunked)
        else:
            reason = f" ({exc})" if exc else ""
            self._fail(BrokeOff(f"the connection closed in the middle of the answer{reason}"))

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # ---- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        names = {name for name, _ in self.headers}
        self._has_length = b"content-length" in names or b"transfer-encoding" in names
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        if not self.head.done():
            self.head.set_result(None)
        self._wake()

    # ---- internals

    _has_length = True

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        self.error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: a caller that already gave up leaves no warning behind
        self._wake()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def write_body(self, body: AsyncIterable[bytes]) -> None:
        """Stream a request body with chunked transfer coding, waiting whenever the socket is full."""
        assert self.transport is not None
        async for piece in body:
            if self.closed:
                return
            if piece:
                self.transport.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                if not self._can_write.is_set():
                    await self._can_write.wait()
        if not self.closed:
            self.transport.write(b"0\r\n\r\n")


class Response:
    """An upstream response whose head has arrived; iterate it for the body, then `release()` it."""

    def __init__(self, pool: Pool, connection: _Connection) -> None:
        self._pool = pool
        self._connection = connection
        self.status = connection.status
        self.headers = connection.headers
        self.released = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def body(self) -> AsyncIterator[bytes]:
        """The body as it arrives: whatever is buffered, joined into one piece; BrokeOff if it stops early."""
        connection = self._connection
        loop = asyncio.get_running_loop()
        while True:
            if connection.chunks:
                chunks = connection.chunks
                piece = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                connection.buffered = 0
                if connection.paused and connection.transport is not None and not connection.closed:
                    connection.paused = False
                    connection.transport.resume_reading()
                yield piece
                continue
            if connection.complete:
                return
            if connection.error is not None:
                raise connection.error
            connection.waiter = loop.create_future()
            await connection.waiter
            connection.waiter = None

    async def pieces(self) -> AsyncIterator[tuple[bytes, bool]]:
        """As `body`, each piece with whether it is the last, so that the last goes out with the end of
        the answer rather than in a message of its own."""
        connection = self._connection
        async for piece in self.body():
            yield piece, connection.complete and not connection.chunks

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.body()])

    def abort(self) -> None:
        """Stop an answer midway (our client left): the connection is closed, which stops the engine's
        work on it, and the body ends with BrokeOff."""
        connection = self._connection
        if not connection.complete and not connection.closed:
            connection._fail(BrokeOff("the client went away"))
            connection._close()

    def release(self) -> None:
        """Give the connection back for the next request if its answer was read whole, else close it."""
        if self.released:
            return
        self.released = True
        connection = self._connection
        if connection.complete and connection.keep_alive and not connection.closed:
            self._pool._put(connection)
        else:
            connection._close()


class Pool:
    """Keep-alive connections by (host, port), shared by every request of the process."""

    def __init__(self, connect_timeout: float = 5.0) -> None:
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    def _put(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.address, [])
        if len(idle) >= _MAX_IDLE_PER_ADDRESS:
            connection._close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _take(self, address: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(address)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < _IDLE_SECONDS:
                connection.reused = True
                connection._reset()
                return connection
            connection._close()
        return None

    async def _connect(self, address: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(address), address[0], address[1]),
                self.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise ConnectFailed(f"no connection within {self.connect_timeout:.0f} s") from None
        except OSError as exc:
            raise ConnectFailed(exc.strerror or str(exc)) from None
        return connection

    async def send(
        self, host: str, port: int, head: bytes, body: bytes | AsyncIterable[bytes] = b""
    ) -> Response:
        """Send a request (`head`: request line and headers, ending with the blank line) and wait for the
        response head. A streamed `body` must be announced in `head` with Transfer-Encoding: chunked."""
        address = (host, port)
        connection = self._take(address)
        if connection is None:
            connection = await self._connect(address)
        try:
            return await self._exchange(connection, head, body)
        except NoResponse:
            if not connection.reused or not isinstance(body, bytes):
                raise
        # A reused connection the engine had closed while idle: once more on a fresh one.
        connection = await self._connect(address)
        return await self._exchange(connection, head, body)

    async def _exchange(
        self, connection: _Connection, head: bytes, body: bytes | AsyncIterable[bytes]
    ) -> Response:
        assert connection.transport is not None
        try:
            if isinstance(body, bytes):
                connection.transport.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    connection.transport.write(body)
            else:
                connection.transport.write(head)
                await asyncio.gather(connection.write_body(body), asyncio.shield(connection.head))
            await connection.head
        except BaseException:
            connection._close()
            raise
        return Response(self, connection)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection._close()
        self._idle.clear()
