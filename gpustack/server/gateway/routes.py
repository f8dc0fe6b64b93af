"""OpenAI-compatible routes: /v1-openai/... (and /v1/... aliases) relayed to a running instance."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from gpustack.metrics import gateway as meter
from gpustack.server import errors, json_body
from gpustack.server.auth import Principal, authenticate, context
from gpustack.server.errors import ApiError
from gpustack.server.gateway import paths
from gpustack.server.gateway.routing import Endpoint, RoutingTable
from gpustack.utils.errors import describe_error
from gpustack.utils.relay import WORKER_ERROR_HEADER, stream_back

logger = logging.getLogger(__name__)


class OpenAIError(Exception):
    def __init__(self, status_code: int, message: str, error_type: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.code = code


def openai_error_response(exc: OpenAIError) -> JSONResponse:
    return errors.openai_error_response(exc.status_code, exc.message, exc.error_type, exc.code)


async def gateway_user(request: Request) -> Principal:
    """Any user or API key; errors in OpenAI's shape, which is what OpenAI clients parse."""
    try:
        principal = await authenticate(request)
    except ApiError as exc:
        raise OpenAIError(exc.status_code, exc.message, "authentication_error", "invalid_api_key") from None
    if not principal.is_user:
        raise OpenAIError(
            403,
            "worker credentials and the cluster token cannot call models; use an API key",
            "permission_error",
        )
    if principal.require_password_change:
        raise OpenAIError(403, "change your initial password before using the API", "permission_error")
    return principal


def _routing(request: Request) -> RoutingTable:
    table: RoutingTable = request.app.state.routing
    return table


def _openai_model(model: dict) -> dict:
    return {
        "id": model["name"],
        "object": "model",
        "created": int(datetime.fromisoformat(model["created_at"]).timestamp()),
        "owned_by": "gpustack",
        "ready": model["ready_replicas"] > 0,
    }


async def list_models(request: Request, _user: Principal = Depends(gateway_user)) -> dict:
    """OpenAI's model list: every deployed model by name, `ready` when one of its instances runs."""
    models = sorted(_routing(request).models.values(), key=lambda m: m["id"])
    return {"object": "list", "data": [_openai_model(model) for model in models]}


async def retrieve_model(request: Request, model_name: str, _user: Principal = Depends(gateway_user)) -> dict:
    """OpenAI's model retrieval, by the name requests use in `model`."""
    table = _routing(request)
    for model in table.models.values():
        if model["name"] == model_name:
            return _openai_model(model)
    raise OpenAIError(404, f"model {model_name!r} does not exist", "invalid_request_error", "model_not_found")


def _model_of(body: bytes) -> str:
    if not body:
        raise OpenAIError(
            400, "the request body must be a JSON object with a 'model' field", "invalid_request_error"
        )
    try:
        payload = json_body.loads(body)
    except json_body.BodyNotJSON as exc:
        raise OpenAIError(400, str(exc), "invalid_request_error") from None
    if not isinstance(payload, dict):
        raise OpenAIError(400, "the request body must be a JSON object", "invalid_request_error")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(
            400, "'model' is required and must be a string", "invalid_request_error", "model_required"
        )
    return model


async def _send(request: Request, endpoint: Endpoint, path: str, body: bytes) -> httpx.Response:
    ctx = context(request)
    headers = {
        "Authorization": f"Bearer {ctx.worker_credential(endpoint.worker_id)}",
        "X-Target-Port": str(endpoint.engine_port),
        "X-Target-Instance": str(endpoint.instance_id),
        "Content-Type": request.headers.get("content-type", "application/json"),
    }
    if "accept" in request.headers:
        headers["Accept"] = request.headers["accept"]
    upstream = ctx.http.build_request(
        "POST", f"{endpoint.worker_address}/proxy/{path}", content=body, headers=headers, timeout=_TIMEOUT
    )
    return await ctx.http.send(upstream, stream=True)


_TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=60.0, pool=30.0)


async def relay(request: Request, path: str) -> Response:
    body = await request.body()
    model = _model_of(body)
    table = _routing(request)
    metrics = context(request).metrics
    gateway_metrics = metrics.gateway if metrics is not None else None
    route = path.removeprefix("v1/")
    if not table.has_model(model):
        if gateway_metrics is not None:  # not by the name asked for: anyone could add series at will
            gateway_metrics.failed("", "", meter.NO_SUCH_MODEL)
        raise OpenAIError(404, f"model {model!r} does not exist", "invalid_request_error", "model_not_found")
    endpoints = table.endpoints(model)
    if not endpoints:
        if gateway_metrics is not None:
            gateway_metrics.failed(model, "", meter.NO_RUNNING_INSTANCE)
            gateway_metrics.count(model, "", route, 503)
        raise OpenAIError(
            503,
            f"model {model!r} has no running instance yet; check its instances' state",
            "service_unavailable",
        )
    failures = []
    for endpoint in endpoints:
        started = time.perf_counter()
        try:
            upstream = await _send(request, endpoint, path, body)
        except httpx.TransportError as exc:
            # Nothing reached the engine; the next instance can take the request.
            if gateway_metrics is not None:
                gateway_metrics.failed(model, endpoint.instance_name, meter.UNREACHABLE)
            reason = describe_error(exc, with_request=False)
            failures.append(f"{endpoint.instance_name} on {endpoint.worker_name}: {reason}")
            logger.debug("model %s: %s unreachable, next one: %s", model, endpoint.instance_name, reason)
            continue
        if WORKER_ERROR_HEADER.lower() in upstream.headers:
            # The worker refused before any engine saw the request (e.g. the engine just stopped).
            detail = (await upstream.aread()).decode(errors="replace")
            await upstream.aclose()
            if gateway_metrics is not None:
                gateway_metrics.failed(model, endpoint.instance_name, meter.WORKER_REFUSED)
            failures.append(f"{endpoint.instance_name} on {endpoint.worker_name}: {_message_of(detail)}")
            continue
        logger.debug(
            "model %s: served by instance %s on worker %s (engine port %d): HTTP %d",
            model,
            endpoint.instance_name,
            endpoint.worker_name,
            endpoint.engine_port,
            upstream.status_code,
        )
        if gateway_metrics is None:
            return stream_back(upstream)
        return gateway_metrics.relayed(stream_back(upstream), model, endpoint.instance_name, route, started)
    logger.warning("model %s: no instance answered: %s", model, "; ".join(failures))
    if gateway_metrics is not None:
        gateway_metrics.failed(model, "", meter.ALL_UNREACHABLE)
        gateway_metrics.count(model, "", route, 503)
    raise OpenAIError(
        503, f"no instance of model {model!r} could be reached ({'; '.join(failures)})", "service_unavailable"
    )


def _message_of(body: str) -> str:
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200]


def _relay_to(engine_path: str) -> Callable[..., Awaitable[Response]]:
    async def endpoint(request: Request, _user: Principal = Depends(gateway_user)) -> Response:
        return await relay(request, engine_path)

    return endpoint


# The body is relayed as it is, so only what the gateway itself reads is documented.
_RELAYED_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {"model": {"type": "string", "description": "the model's name"}},
                    "additionalProperties": True,
                }
            }
        },
    }
}


def build_router() -> APIRouter:
    router = APIRouter(tags=["openai"])
    for prefix in paths.PREFIXES:
        documented = prefix == paths.PREFIX  # the alias answers the same, undocumented
        for path in paths.RELAYED:
            router.add_api_route(
                f"{prefix}/{path}",
                _relay_to(f"v1/{path}"),
                methods=["POST"],
                include_in_schema=documented,
                openapi_extra=_RELAYED_BODY,
            )
        router.add_api_route(f"{prefix}/models", list_models, methods=["GET"], include_in_schema=documented)
        router.add_api_route(
            f"{prefix}/models/{{model_name:path}}",
            retrieve_model,
            methods=["GET"],
            include_in_schema=documented,
        )
    return router
