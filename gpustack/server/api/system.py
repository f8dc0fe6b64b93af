"""Health, readiness, version and the run-time log level."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from gpustack import __version__
from gpustack.server.auth import authenticate, context, require_admin, require_user
from gpustack.server.errors import ServiceUnavailable
from gpustack.server.write_probe import WriteProbe
from gpustack.utils.log_level_route import is_loopback, log_level_router

router = APIRouter()


@router.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> str:
    return "ok"


@router.get("/readyz", response_class=PlainTextResponse)
async def readyz(request: Request) -> str:
    """Ready when the database accepts a write: a server that can only read is not serving its API."""
    probe = getattr(request.app.state, "write_probe", None)
    if probe is None:
        probe = request.app.state.write_probe = WriteProbe(context(request).sessions)
    problem = await probe.problem()
    if problem:
        raise ServiceUnavailable(problem)
    return "ok"


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


async def _loopback_or_admin(request: Request) -> None:
    # The FAQ's `curl -X PUT http://localhost/debug/log_level -d "debug"` works without credentials;
    # this is the one route that trusts loopback callers.
    if not is_loopback(request):
        await require_admin(await require_user(await authenticate(request)))


log_level = log_level_router(_loopback_or_admin)
