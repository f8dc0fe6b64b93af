"""The outermost ASGI layer of the server: every response gets an X-Request-ID (the client's, if it sent
a usable one) and, with --enable-cors, the CORS headers of its origin; CORS preflights are answered here;
the OpenAI routes that reach an engine go straight to the gateway's relay (relay.py) and everything else
to the application."""

from __future__ import annotations

import re
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpustack.schemas.routes import OpenAIRoute
from gpustack.server.cors import CorsPolicy
from gpustack.server.errors import response_for
from gpustack.server.gateway import paths
from gpustack.server.gateway.relay import Gateway

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


def relayed_paths() -> dict[str, OpenAIRoute]:
    """Every path the relay answers (POST), under each prefix."""
    return {f"{prefix}/{route.value}": route for prefix in paths.PREFIXES for route in OpenAIRoute}


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            if _REQUEST_ID.match(value):
                return value.decode()
            break
    return secrets.token_hex(16)


class Front:
    def __init__(
        self, app: ASGIApp, gateway: Gateway, cors: CorsPolicy | None = None, application: Any = None
    ) -> None:
        """`app`: what answers everything else; `application`: the Starlette application it belongs to
        (the relay's requests reach no layer that would set scope["app"], which authentication reads)."""
        self.app = app
        self.gateway = gateway
        self.application = application
        self.cors = cors
        self.relayed = relayed_paths()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        request_id = request_id_of(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        added = [(b"x-request-id", request_id.encode())]
        if self.cors is not None:
            origin = next((value for name, value in headers if name == b"origin"), None)
            if origin is not None:
                if scope["method"] == "OPTIONS" and any(
                    n == b"access-control-request-method" for n, _ in headers
                ):
                    await self._preflight(scope, receive, send, origin, added)
                    return
                if self.cors.allows(origin.decode("latin-1")):
                    added += self.cors.response_headers(origin)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        route = self.relayed.get(scope["path"]) if scope["method"] == "POST" else None
        if route is not None:
            if self.application is not None:
                scope["app"] = self.application
            await self.gateway.handle(scope, receive, send_with_headers, route, request_id)
        else:
            await self.app(scope, receive, send_with_headers)

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, origin: bytes, added: list[tuple[bytes, bytes]]
    ) -> None:
        assert self.cors is not None
        if not self.cors.allows(origin.decode("latin-1")):
            response = response_for(
                scope["path"],
                403,
                f"origin {origin.decode('latin-1')!r} may not call this server; the server's --allow-origins "
                "lists the origins that may",
            )
            response.headers.update({k.decode(): v.decode() for k, v in added})
            await response(scope, receive, send)
            return
        requested = next((v for n, v in scope["headers"] if n == b"access-control-request-headers"), None)
        headers = added + self.cors.preflight_headers(origin, requested) + [(b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
