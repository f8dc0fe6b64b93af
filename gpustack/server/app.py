"""The server's FastAPI application: management API, gateway, health and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from gpustack import __version__
from gpustack.server import errors, openapi, storage_full, ui
from gpustack.server.api import (
    api_keys,
    auth,
    backends,
    catalog,
    evaluations,
    instances,
    metrics,
    model_files,
    models,
    system,
    usage,
    users,
    worker_join,
    workers,
)
from gpustack.server.auth import CredentialCache
from gpustack.server.context import ServerContext
from gpustack.server.cors import policy_of
from gpustack.server.db.retry import handle_database_busy
from gpustack.server.edge import BodyLimits, Edge
from gpustack.server.gateway import routes as gateway
from gpustack.server.gateway.front import Front
from gpustack.server.gateway.relay import Gateway, GatewaySettings
from gpustack.server.gateway.routing import RoutingTable, maintain
from gpustack.server.gateway.usage import UsageRecorder
from gpustack.server.login_throttle import LoginThrottle
from gpustack.server.route_table import RouteTable
from gpustack.utils.request_log import RequestLog


def create_app(ctx: ServerContext) -> FastAPI:
    routing = RoutingTable(ctx.worker_credential)
    config = ctx.config
    relay = Gateway(
        routing,
        GatewaySettings(
            max_body=config.gateway_max_body_size,
            server_in_flight=config.gateway_max_in_flight,
            model_in_flight=config.gateway_model_max_in_flight,
        ),
        usage=UsageRecorder(ctx.sessions),
        metrics=ctx.metrics.gateway if ctx.metrics is not None else None,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ready = asyncio.Event()
        task = asyncio.create_task(maintain(ctx, routing, ready), name="gateway-routing")
        upkeep = asyncio.create_task(relay.run(), name="gateway-upkeep")
        await ready.wait()
        try:
            yield
        finally:
            task.cancel()
            upkeep.cancel()
            await asyncio.gather(task, upkeep, return_exceptions=True)
            await relay.close()  # after the last request: the usage left is written

    app = _ServerApp(title="GPUStack", version=__version__, lifespan=lifespan)
    app.front = Front(
        app.without_front,
        gateway=relay,
        cors=policy_of(config.enable_cors, config.allow_origins),
        application=app,
    )
    app.state.ctx = ctx
    app.state.credential_cache = CredentialCache()
    app.state.login_throttle = LoginThrottle()
    app.state.routing = routing
    app.state.gateway = relay
    if ctx.metrics is not None:
        ctx.metrics.watch_cluster(routing)
    app.add_exception_handler(errors.ApiError, errors.handle_api_error)
    app.add_exception_handler(RequestValidationError, errors.handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, errors.handle_http_exception)
    app.add_exception_handler(StaleDataError, errors.handle_stale_data)
    app.add_exception_handler(storage_full.StorageFull, storage_full.handle_storage_full)
    app.add_exception_handler(gateway.OpenAIError, _handle_openai_error)
    app.add_exception_handler(OverflowError, errors.handle_database_range_error)
    app.add_exception_handler(DBAPIError, errors.handle_database_range_error)
    app.add_exception_handler(OperationalError, handle_database_busy)  # StorageFull's own comes first
    app.add_exception_handler(PoolTimeout, handle_database_busy)
    served = routers()
    for router in served:
        app.include_router(router)
    app.state.route_table = RouteTable([*app.router.routes, *(r for router in served for r in router.routes)])
    # Credentials and body limits before anything reads a body; the request log outside it sees its answers.
    app.add_middleware(
        Edge, limits=BodyLimits(gateway=ctx.config.gateway_max_body_size), routes=app.state.route_table
    )
    app.add_middleware(RequestLog, logger_name="gpustack.server.requests")
    openapi.install(app)
    ui.install(app)  # the web UI answers what no route does
    return app


class _ServerApp(FastAPI):
    """The application, with the gateway's front (front.py) outside everything else: request ids and CORS
    on every answer, and the relayed OpenAI routes answered before any other layer sees them (they do
    their own authentication before the body, and their own access log)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None and scope["type"] == "http":
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def without_front(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def routers() -> list[APIRouter]:
    """Every router the server serves, in order (the security tests check each route's access)."""
    modules = [system, auth, users, api_keys, workers, models, instances, evaluations, worker_join, metrics]
    modules += [backends, usage]
    modules += [model_files, catalog]
    return [*(module.router for module in modules), system.log_level, gateway.build_router()]


async def _handle_openai_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, gateway.OpenAIError)
    return gateway.openai_error_response(exc)
