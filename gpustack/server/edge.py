"""The first thing every HTTP request meets: credentials are checked before a byte of the body is read,
and every route's body has a size limit, answered with 413 past it (announced or counted as it streams).

Without this, FastAPI reads and parses a whole body before the route's dependencies look at the
credentials: anyone could make the server hold hundreds of megabytes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpustack.server.auth import authenticate
from gpustack.server.errors import ApiError, TooManyRequests, response_for
from gpustack.server.gateway.paths import speaks_openai
from gpustack.server.route_table import RouteTable
from gpustack.utils.log_level_route import is_loopback

logger = logging.getLogger(__name__)

KiB = 1024
MiB = 1024**2

# What a management body can legitimately hold (a model with its parameters, a worker's status report)
# is a few kilobytes. Two megabytes stop abuse yet let an oversized field (a 1 MB chat template) reach
# the validation that names the field and its own limit, which helps more than a bare 413.
MANAGEMENT_BODY_LIMIT = 2 * MiB
# Routes that anyone may call read their body before knowing who calls: a login is a few hundred bytes.
PUBLIC_BODY_LIMIT = 16 * KiB

# Routes that need no credentials, by path template. Everything else authenticates before its body.
# /auth/logout reads no body and must clear the cookie of a session that has already ended.
PUBLIC_PATHS = frozenset(
    {
        "/auth/login",
        "/auth/logout",
        "/healthz",
        "/readyz",
        "/version",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        # Prometheus sends the metrics token, which is no user's credential: the route checks it.
        "/metrics",
    }
)
# The FAQ's `curl -X PUT http://localhost/debug/log_level -d debug`: loopback callers need no credentials.
LOOPBACK_PATHS = frozenset({"/debug/log_level"})

GATEWAY_FLAG = "--gateway-max-body-size"
_SMALL = "requests to it are never that large: check what the client sends"


@dataclass(frozen=True)
class BodyLimits:
    """Largest request body in bytes, by kind of route."""

    gateway: int
    management: int = MANAGEMENT_BODY_LIMIT
    public: int = PUBLIC_BODY_LIMIT


@dataclass(frozen=True)
class _Policy:
    authenticate: bool
    limit: int
    remedy: str  # how a legitimate client gets past the limit, for the 413's message


def format_size(size: int) -> str:
    if size >= MiB and size % MiB == 0:
        return f"{size // MiB} MiB"
    if size >= KiB and size % KiB == 0:
        return f"{size // KiB} KiB"
    return f"{size} bytes"


class _BodyTooLarge(Exception):
    pass


class Edge:
    """Pure ASGI middleware (it must see the body as a stream, which BaseHTTPMiddleware hides)."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, routes: RouteTable) -> None:
        self.app = app
        self.limits = limits
        self.routes = routes

    def _policy(self, scope: Scope, request: Request) -> _Policy:
        template = self.routes.find(scope["method"], scope["path"])
        loopback_only = template in LOOPBACK_PATHS and is_loopback(request)
        if template is None or template in PUBLIC_PATHS or loopback_only:
            # No route (the router answers 404 or 405 without reading anything), or a route for anyone.
            return _Policy(False, self.limits.public, _SMALL)
        if speaks_openai(scope["path"]):
            return _Policy(True, self.limits.gateway, f"the server's {GATEWAY_FLAG} raises it")
        return _Policy(True, self.limits.management, _SMALL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        request = Request(scope)  # no receive: nothing here can read the body
        policy = self._policy(scope, request)

        if policy.authenticate:
            try:
                request.state.principal = await authenticate(request)
            except ApiError as exc:
                headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
                if exc.status_code == 401:
                    headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
                await response_for(path, exc.status_code, exc.message, headers)(scope, receive, send)
                return
            except Exception:
                # Not an answer about the credentials (the database failed, say): the route's own
                # dependency authenticates again, where the app's error handlers can answer it.
                logger.debug("authentication before the body failed; the route will retry it", exc_info=True)

        too_large = (
            f"the request body is larger than {format_size(policy.limit)}, the most this route accepts; "
            f"{policy.remedy}"
        )
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await response_for(path, 400, "Content-Length must be a number of bytes")(
                    scope, receive, send
                )
                return
            if int(length) > policy.limit:
                await response_for(path, 413, too_large)(scope, receive, send)
                return

        await self._call_limited(scope, receive, send, policy.limit, path, too_large)

    async def _call_limited(
        self, scope: Scope, receive: Receive, send: Send, limit: int, path: str, message: str
    ) -> None:
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return event

        async def guarded_send(event: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app makes of the interrupted read (FastAPI: a 400) is replaced below
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if exceeded and not started:
            await response_for(path, 413, message)(scope, receive, send)
