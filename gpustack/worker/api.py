"""The worker's HTTP API: health, log level, instance logs, and the proxy to its engines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from gpustack import __version__
from gpustack.utils.errors import describe_error
from gpustack.utils.log_level_route import is_loopback, log_level_router
from gpustack.utils.relay import WORKER_ERROR_HEADER, stream_back
from gpustack.utils.request_log import RequestLog
from gpustack.utils.tokens import tokens_equal
from gpustack.worker.files.api import files_router
from gpustack.worker.serve import ServeManager, serve_log_path, tail_lines

# Request headers not passed to the engine: the hop's own, and our credentials.
_NOT_FORWARDED = {
    "connection", "keep-alive", "transfer-encoding", "content-length", "host", "authorization",
    "x-target-port", "x-target-instance",
}  # fmt: skip
_FOLLOW_POLL_SECONDS = 0.2


class WorkerApiError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def create_worker_app(credential: Callable[[], str | None], serve: ServeManager, log_dir: str) -> FastAPI:
    """The worker's API. Callers other than loopback health and log-level checks must present
    `credential()`: the credential the server gave this worker at registration, which only the server
    (and this worker) knows; other workers hold the cluster token, which opens nothing here."""
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=None, write=60.0, pool=30.0),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await http.aclose()

    app = FastAPI(
        title="GPUStack worker", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan
    )

    app.add_middleware(RequestLog, logger_name="gpustack.worker.requests")

    @app.exception_handler(WorkerApiError)
    async def _error(_request: Request, exc: WorkerApiError) -> JSONResponse:
        reason = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 400: "BadRequest"}.get(
            exc.status_code, "Error"
        )
        # The header tells the gateway that the worker, not the engine, refused: it may try another instance.
        return JSONResponse(
            {"code": exc.status_code, "reason": reason, "message": exc.message},
            exc.status_code,
            headers={WORKER_ERROR_HEADER: "1"},
        )

    async def require_token(request: Request) -> None:
        expected = credential()
        if expected is None:
            raise WorkerApiError(401, "this worker has not registered with a server yet")
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not tokens_equal(value.strip(), expected):
            raise WorkerApiError(401, "this worker accepts only its server, with the worker's credential")

    async def loopback_or_token(request: Request) -> None:
        if not is_loopback(request):
            await require_token(request)

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    app.include_router(log_level_router(loopback_or_token))

    @app.get("/serve-logs/{instance_id}", dependencies=[Depends(require_token)])
    async def serve_logs(
        instance_id: int,
        tail: int = Query(-1, ge=-1, le=1_000_000),
        follow: bool = False,
    ) -> StreamingResponse:
        path = serve_log_path(log_dir, instance_id)
        if not path.exists():
            raise WorkerApiError(404, f"no log for model instance {instance_id} on this worker yet")
        return StreamingResponse(_read_log(path, tail, follow, serve, instance_id), media_type="text/plain")

    app.include_router(files_router(require_token, serve.files))

    @app.api_route("/proxy/{path:path}", methods=["GET", "POST"], dependencies=[Depends(require_token)])
    async def proxy(request: Request, path: str) -> Response:
        try:
            port = int(request.headers.get("x-target-port", ""))
            instance_id = int(request.headers.get("x-target-instance", ""))
        except ValueError:
            raise WorkerApiError(
                400,
                "the X-Target-Port and X-Target-Instance headers (engine port, instance id) are required",
            ) from None
        if not serve.serves(instance_id, port):
            # Only this worker's own engines can be reached, and only the one the gateway meant: a stale
            # route must not land on another model that now uses the port.
            raise WorkerApiError(
                404, f"this worker runs no engine of model instance {instance_id} on port {port}"
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        secret = serve.engine_secret(instance_id)
        if secret:
            headers["authorization"] = f"Bearer {secret}"  # the engine requires its instance's secret
        upstream_request = http.build_request(
            request.method,
            f"http://127.0.0.1:{port}/{path}",
            params=request.query_params,
            headers=headers,
            content=request.stream(),
        )
        try:
            upstream = await http.send(upstream_request, stream=True)
        except httpx.TransportError as exc:
            reason = describe_error(exc, with_request=False)
            raise WorkerApiError(502, f"the engine on port {port} did not answer: {reason}") from None
        return stream_back(upstream)

    return app


def _read_from(path: Path, position: int, size: int = 1024 * 1024) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(position)
        return handle.read(size)


async def _read_log(
    path: Path, tail: int, follow: bool, serve: ServeManager, instance_id: int
) -> AsyncIterator[bytes]:
    position = 0
    if tail >= 0:
        position = (await asyncio.to_thread(path.stat)).st_size
        lines = await asyncio.to_thread(tail_lines, path, tail)
        if lines:
            yield ("\n".join(lines) + "\n").encode()
    while True:
        chunk = await asyncio.to_thread(_read_from, path, position)
        if chunk:
            position += len(chunk)
            yield chunk
            continue
        if not follow or instance_id not in serve.engines:
            return
        await asyncio.sleep(_FOLLOW_POLL_SECONDS)
