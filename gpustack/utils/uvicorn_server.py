"""uvicorn servers that share one event loop and leave signal handling to the gpustack process."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI


class PortUnavailable(RuntimeError):
    pass


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(host: str, port: int, flag: str) -> socket.socket:
    """Bind before starting uvicorn, so a busy or privileged port gives one clear line naming the flag."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that declare it, and without it every
    # response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortUnavailable(
                f"{flag} {port}: the port is already in use on {host}; choose another"
            ) from None
        if exc.errno == errno.EACCES:
            raise PortUnavailable(
                f"{flag} {port}: permission denied on {host} (ports below 1024 need root); choose another"
            ) from None
        raise PortUnavailable(f"{flag} {port}: cannot listen on {host}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def make_server(
    app: FastAPI,
    *,
    ssl_keyfile: str | None = None,
    ssl_certfile: str | None = None,
    trusted_proxies: list[str] | None = None,
) -> EmbeddedServer:
    """A server for `app`: TLS when both files are given; X-Forwarded-For/-Proto believed only from
    `trusted_proxies` (IPs or CIDRs), so the client address and https are right behind a proxy."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
        lifespan="on",
        ssl_keyfile=ssl_keyfile,
        ssl_certfile=ssl_certfile,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies or []) or None,
    )
    return EmbeddedServer(config)
