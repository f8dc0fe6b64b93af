"""GET/PUT /debug/log_level, mounted by both the server and the worker with their own guard."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response

from gpustack.log import current_level, set_level


def is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def log_level_router(guard: Callable[[Request], Awaitable[Any]]) -> APIRouter:
    router = APIRouter()

    @router.get("/debug/log_level", response_class=PlainTextResponse, dependencies=[Depends(guard)])
    async def get_log_level() -> str:
        return current_level() + "\n"

    @router.put("/debug/log_level", response_class=PlainTextResponse, dependencies=[Depends(guard)])
    async def put_log_level(request: Request) -> Response:
        body = (await request.body()).decode(errors="replace")
        try:
            set_level(body)
        except ValueError as exc:
            return PlainTextResponse(str(exc) + "\n", status_code=400)
        return PlainTextResponse(current_level() + "\n")

    return router
