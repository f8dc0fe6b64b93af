"""GET /metrics: the server's Prometheus metrics, for the metrics token or an administrator."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gpustack.metrics.access import HOW_TO_AUTHENTICATE, bearer_of, is_metrics_token
from gpustack.server.auth import authenticate, context, require_admin, require_user
from gpustack.server.errors import NotFound, Unauthorized

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus text format. Send `Authorization: Bearer <metrics token>` (--metrics-token) or an
    administrator's API key."""
    ctx = context(request)
    if ctx.metrics is None:
        raise NotFound("metrics are turned off on this server (--disable-metrics)")
    given = bearer_of(request.headers.get("authorization", ""))
    if not is_metrics_token(given, ctx.config.metrics_token):
        try:
            principal = await authenticate(request)
        except Unauthorized as exc:
            raise Unauthorized(f"{exc.message}; to read metrics, {HOW_TO_AUTHENTICATE}") from None
        await require_admin(await require_user(principal))
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
