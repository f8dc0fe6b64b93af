"""The server's FastAPI application: management API, gateway, health and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpustack import __version__
from gpustack.server import errors, storage_full
from gpustack.server.api import api_keys, auth, evaluations, instances, models, system, users, workers
from gpustack.server.auth import ApiKeyCache
from gpustack.server.context import ServerContext
from gpustack.server.gateway import routes as gateway
from gpustack.server.gateway.routing import RoutingTable, maintain
from gpustack.utils.request_log import RequestLog


def create_app(ctx: ServerContext) -> FastAPI:
    routing = RoutingTable()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ready = asyncio.Event()
        task = asyncio.create_task(maintain(ctx, routing, ready), name="gateway-routing")
        await ready.wait()
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title="GPUStack", version=__version__, lifespan=lifespan)
    app.state.ctx = ctx
    app.state.api_key_cache = ApiKeyCache()
    app.state.routing = routing
    app.add_exception_handler(errors.ApiError, errors.handle_api_error)
    app.add_exception_handler(RequestValidationError, errors.handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, errors.handle_http_exception)
    app.add_exception_handler(StaleDataError, errors.handle_stale_data)
    app.add_exception_handler(storage_full.StorageFull, storage_full.handle_storage_full)
    app.add_exception_handler(gateway.OpenAIError, _handle_openai_error)
    app.add_middleware(RequestLog, logger_name="gpustack.server.requests")
    for module in (system, auth, users, api_keys, workers, models, instances, evaluations):
        app.include_router(module.router)
    app.include_router(gateway.build_router())
    return app


async def _handle_openai_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, gateway.OpenAIError)
    return gateway.openai_error_response(exc)
