"""Which proxy a request goes through, as curl decides it: HTTP_PROXY, HTTPS_PROXY, ALL_PROXY (socks5
too) and NO_PROXY with host names, domains, addresses and CIDR networks (the FAQ's
`NO_PROXY=localhost,127.0.0.1,192.168.0.0/24,...`), and an httpx transport that routes by it.

httpx's own reading of the environment ignores CIDR entries, so our clients run with trust_env off and
this transport instead; the same rule serves huggingface_hub's client (its httpx fork) through
`routing_transport`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _get(environ: Mapping[str, str], name: str) -> str:
    # curl reads http_proxy in lower case only (a CGI could set HTTP_PROXY from a request header); the
    # FAQ's upper-case spelling is what users set, so both are read, lower case first.
    return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip()


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port = None
        if entry.count(":") == 1 and not entry.startswith("["):  # host:port (not an IPv6 address)
            entry, _, text = entry.partition(":")
            entry_port = int(text) if text.isdigit() else None
        entry = entry.strip("[]").rstrip(".")
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.lstrip("*").lstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy URL a request to `url` goes through, or None for a direct connection."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    proxy = _get(environ, f"{scheme}_proxy") or _get(environ, "all_proxy")
    if not proxy or _bypassed(host, port, _get(environ, "no_proxy")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def describe_proxy(proxy: str | None) -> str:
    """A proxy for messages and logs, without its password."""
    if proxy is None:
        return "direct"
    parts = urlsplit(proxy)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}"


def routing_transport(module: Any, environ: Mapping[str, str], asynchronous: bool, **options: Any) -> Any:
    """A transport of `module` (httpx, or huggingface_hub's httpx2) that sends each request through the
    proxy `proxy_for` names, keeping one pooled transport per proxy."""
    base = module.AsyncBaseTransport if asynchronous else module.BaseTransport
    make = module.AsyncHTTPTransport if asynchronous else module.HTTPTransport
    env = dict(environ)

    class Routing(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self._transports: dict[str | None, Any] = {}

        def _for(self, request: Any) -> Any:
            proxy = proxy_for(str(request.url), env)
            transport = self._transports.get(proxy)
            if transport is None:
                transport = make(proxy=proxy, **options) if proxy else make(**options)
                self._transports[proxy] = transport
            return transport

    if asynchronous:

        class AsyncRouting(Routing):
            async def handle_async_request(self, request: Any) -> Any:
                return await self._for(request).handle_async_request(request)

            async def aclose(self) -> None:
                for transport in self._transports.values():
                    await transport.aclose()

        return AsyncRouting()

    class SyncRouting(Routing):
        def handle_request(self, request: Any) -> Any:
            return self._for(request).handle_request(request)

        def close(self) -> None:
            for transport in self._transports.values():
                transport.close()

    return SyncRouting()
