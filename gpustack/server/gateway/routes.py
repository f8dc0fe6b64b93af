"""The OpenAI routes as the application (and its OpenAPI document) sees them: the model list and
retrieval, and one route per OpenAI route an engine may serve, under /v1 and the /v1-openai alias.

Requests for the relayed routes are answered by the gateway's relay (relay.py) before they reach these
routes (front.py); the routes here stand for them in the documentation and the route table, and hand a
request that does get here to the same relay."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gpustack.schemas.routes import OpenAIRoute
from gpustack.server import errors
from gpustack.server.auth import Principal, authenticate
from gpustack.server.errors import ApiError
from gpustack.server.gateway import paths
from gpustack.server.gateway.routing import RoutingTable


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


def _visible(principal: Principal, name: str) -> bool:
    return principal.allowed_models is None or name in principal.allowed_models


async def list_models(request: Request, user: Principal = Depends(gateway_user)) -> dict:
    """OpenAI's model list: every deployed model by name (those the key may use), `ready` when one of its
    instances runs."""
    models = sorted(_routing(request).models.values(), key=lambda m: m["name"])
    return {"object": "list", "data": [_openai_model(m) for m in models if _visible(user, m["name"])]}


async def retrieve_model(request: Request, model_name: str, user: Principal = Depends(gateway_user)) -> dict:
    """OpenAI's model retrieval, by the name requests use in `model`."""
    for model in _routing(request).models.values():
        if model["name"] == model_name and _visible(user, model_name):
            return _openai_model(model)
    raise OpenAIError(404, f"model {model_name!r} does not exist", "invalid_request_error", "model_not_found")


class _Relayed(Response):
    """Hands the request to the relay, which reads the body and answers itself."""

    def __init__(self, route: OpenAIRoute) -> None:
        super().__init__()
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = scope.get("state", {}).get("request_id") or ""
        await scope["app"].state.gateway.handle(scope, receive, send, self.route, request_id)


def _relay_to(route: OpenAIRoute) -> Callable[..., Awaitable[Response]]:
    async def endpoint(_request: Request) -> Response:
        return _Relayed(route)

    return endpoint


def _documented_body(route: OpenAIRoute) -> dict:
    """The body is relayed as it is, so only what the gateway itself reads is documented."""
    properties = {"model": {"type": "string", "description": "the model's name"}}
    schema: dict = {"type": "object", "required": ["model"], "properties": properties}
    if route.multipart:
        properties["file"] = {"type": "string", "format": "binary"}
        media = "multipart/form-data"
    else:
        schema["additionalProperties"] = True
        media = "application/json"
    return {"requestBody": {"required": True, "content": {media: {"schema": schema}}}}


def build_router() -> APIRouter:
    router = APIRouter(tags=["openai"])
    for prefix in paths.PREFIXES:
        documented = prefix == paths.PREFIX  # the alias answers the same, undocumented
        for route in OpenAIRoute:
            router.add_api_route(
                f"{prefix}/{route.value}",
                _relay_to(route),
                methods=["POST"],
                include_in_schema=documented,
                openapi_extra=_documented_body(route),
            )
        router.add_api_route(f"{prefix}/models", list_models, methods=["GET"], include_in_schema=documented)
        router.add_api_route(
            f"{prefix}/models/{{model_name:path}}",
            retrieve_model,
            methods=["GET"],
            include_in_schema=documented,
        )
    return router
