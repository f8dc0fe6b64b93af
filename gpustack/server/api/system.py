"""Health, readiness, version and the run-time log level."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from gpustack import __version__
from gpustack.server.auth import authenticate, context, require_admin, require_user
from gpustack.server.errors import ServiceUnavailable
from gpustack.utils.log_level_route import is_loopback, log_level_router

router = APIRouter()


@router.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> str:
    return "ok"


@router.get("/readyz", response_class=PlainTextResponse)
async def readyz(request: Request) -> str:
    ctx = context(request)
    try:
        async with ctx.session() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any database failure means not ready
        raise ServiceUnavailable(f"database is not reachable: {exc}") from exc
    return "ok"


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


async def _loopback_or_admin(request: Request) -> None:
    # The FAQ's `curl -X PUT http://localhost/debug/log_level -d "debug"` works without credentials;
    # this is the one route that trusts loopback callers.
    if not is_loopback(request):
        await require_admin(await require_user(await authenticate(request)))


router.include_router(log_level_router(_loopback_or_admin))
