"""The worker's metrics listener (the FAQ's port 10151): GET /metrics for the metrics token or an
administrator's API key, which the worker's server vouches for."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import httpx
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gpustack.metrics.access import HOW_TO_AUTHENTICATE, bearer_of, is_metrics_token
from gpustack.metrics.worker import WorkerMetrics
from gpustack.utils.uvicorn_server import EmbeddedServer, PortUnavailable, bind_socket, make_server

logger = logging.getLogger(__name__)

# How long the server's answer about an API key is believed (as the server's own credential cache).
VERDICT_SECONDS = 30.0


class AdminKeys:
    """Asks the server whether an API key belongs to an administrator, and remembers the answer a while."""

    def __init__(self, server_url: str, verify: bool = True) -> None:
        self._http = httpx.AsyncClient(base_url=server_url, timeout=httpx.Timeout(5.0), verify=verify)
        self._verdicts: dict[str, tuple[float, bool]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def is_admin(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode()).hexdigest()  # keys are not kept in memory as they are
        cached = self._verdicts.get(digest)
        if cached is not None and time.monotonic() - cached[0] < VERDICT_SECONDS:
            return cached[1]
        try:
            response = await self._http.get("/v2/users/me", headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            logger.warning("metrics: cannot check an API key with the server: %s", exc)
            return False  # not remembered: the next scrape asks again
        verdict = response.status_code == 200 and response.json().get("is_admin") is True
        if len(self._verdicts) > 1000:
            self._verdicts.clear()
        self._verdicts[digest] = (time.monotonic(), verdict)
        return verdict


def _refusal(status: int, message: str) -> JSONResponse:
    reason = "Unauthorized" if status == 401 else "Forbidden"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"code": status, "reason": reason, "message": message}, status, headers=headers)


def create_metrics_app(metrics: WorkerMetrics, token: str | None, admin_keys: AdminKeys) -> FastAPI:
    async def serve_metrics(request: Request) -> Response:
        given = bearer_of(request.headers.get("authorization", ""))
        if given is None:
            return _refusal(401, f"authentication required: {HOW_TO_AUTHENTICATE}")
        if not is_metrics_token(given, token) and not await admin_keys.is_admin(given):
            return _refusal(403, f"this credential may not read metrics: {HOW_TO_AUTHENTICATE}")
        return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    return FastAPI(
        routes=[Route("/metrics", serve_metrics), Route("/healthz", healthz)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )


class MetricsListener:
    """The metrics port of a running worker."""

    def __init__(
        self, server: EmbeddedServer, serving: asyncio.Task, metrics: WorkerMetrics, keys: AdminKeys
    ):
        self._server = server
        self._serving = serving
        self._metrics = metrics
        self._keys = keys

    @classmethod
    def start(
        cls, port: int, token: str | None, metrics: WorkerMetrics, keys: AdminKeys
    ) -> MetricsListener | None:
        """Listen on `port`; a port in use costs the metrics (said loudly), not the worker's engines."""
        try:
            sock = bind_socket("0.0.0.0", port, "--worker-metrics-port")
        except PortUnavailable as exc:
            logger.error("worker metrics are not served: %s, or turn them off with --disable-metrics", exc)
            return None
        server = make_server(create_metrics_app(metrics, token, keys))
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="worker-metrics")
        logger.info("worker metrics on port %d (/metrics)", port)
        return cls(server, serving, metrics, keys)

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._serving
        await self._metrics.aclose()
        await self._keys.aclose()
