"""The listening sockets gpustack binds itself."""

from __future__ import annotations

import socket

import pytest

from gpustack.utils.uvicorn_server import PortUnavailable, bind_socket


def test_listening_socket_declares_tcp_so_asyncio_turns_nagle_off() -> None:
    # Without proto=IPPROTO_TCP asyncio skips TCP_NODELAY and each response stalls ~40 ms.
    sock = bind_socket("127.0.0.1", 0, "--port")
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_busy_port_names_the_flag() -> None:
    first = bind_socket("127.0.0.1", 0, "--port")
    try:
        with pytest.raises(PortUnavailable, match="--worker-port .* already in use"):
            bind_socket("127.0.0.1", first.getsockname()[1], "--worker-port")
    finally:
        first.close()
