"""Addresses and ports of this machine."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import psutil


def first_non_loopback_ip() -> str:
    """The first IPv4 address of an interface that is up and not loopback; 127.0.0.1 when none."""
    stats = psutil.net_if_stats()
    for name, addresses in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return "127.0.0.1"


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something listens on host:port: a TCP connection opens within `timeout`, closed at once."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
