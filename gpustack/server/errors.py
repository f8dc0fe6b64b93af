"""Domain errors and their two JSON forms: the management API's {"code", "reason", "message"} and, on the
gateway's paths, OpenAI's {"error": {"message", "type", "code"}}."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpustack.server.gateway.paths import speaks_openai
from gpustack.server.json_body import TOO_DEEP


class ApiError(Exception):
    status_code = 500
    reason = "InternalServerError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status_code = 400
    reason = "BadRequest"


class Unauthorized(ApiError):
    status_code = 401
    reason = "Unauthorized"


class Forbidden(ApiError):
    status_code = 403
    reason = "Forbidden"


class NotFound(ApiError):
    status_code = 404
    reason = "NotFound"


class Conflict(ApiError):
    status_code = 409
    reason = "Conflict"


class TooManyRequests(ApiError):
    status_code = 429
    reason = "TooManyRequests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class ServiceUnavailable(ApiError):
    status_code = 503
    reason = "ServiceUnavailable"


class ErrorResponse(BaseModel):
    """How the management API answers an error (documented in the OpenAPI schema)."""

    code: int
    reason: str
    message: str


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    """How the OpenAI-compatible gateway answers an error, as OpenAI's clients parse it."""

    error: OpenAIErrorDetail


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "ContentTooLarge",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def openai_error_type(status_code: int) -> str:
    if status_code >= 500:
        return "server_error"
    return _OPENAI_TYPES.get(status_code, "invalid_request_error")


def openai_error_response(
    status_code: int,
    message: str,
    error_type: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type or openai_error_type(status_code), "code": code}}
    return JSONResponse(body, status_code=status_code, headers=headers)


def response_for(
    path: str, status_code: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in the shape the route at `path` speaks: OpenAI's on the gateway, ours elsewhere."""
    if speaks_openai(path):
        code = "invalid_api_key" if status_code == 401 else None
        return openai_error_response(status_code, message, code=code, headers=headers)
    response = error_response(status_code, _REASONS.get(status_code, "Error"), message)
    response.headers.update(headers or {})
    return response


def error_response(status_code: int, reason: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return JSONResponse(
        {"code": status_code, "reason": reason, "message": message}, status_code=status_code, headers=headers
    )


def describe_validation_error(exc: RequestValidationError) -> str:
    """One readable line per problem, e.g. 'replicas: Input should be greater than or equal to 0'."""
    parts = []
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
            continue
        if error.get("type") == "missing" and not location:
            parts.append("a JSON request body is required")
            continue
        parts.append(f"{'.'.join(location)}: {message}" if location else message)
    return "; ".join(parts) or "invalid request"


async def handle_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    response = error_response(exc.status_code, exc.reason, exc.message)
    if isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "BadRequest", describe_validation_error(exc))


async def handle_stale_data(_request: Request, _exc: Exception) -> JSONResponse:
    return error_response(409, "Conflict", "the resource changed while this request ran; try again")


def allowed_methods(request: Request, exc: StarletteHTTPException) -> list[str]:
    """Every method some route serves at this request's path (Starlette names only the first route's)."""
    table = getattr(request.app.state, "route_table", None)
    if table is not None:
        return list(table.methods_at(request.url.path))
    return [m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()]


def _http_exception_message(exc: StarletteHTTPException, request: Request) -> str:
    if exc.status_code == 404 and exc.detail == "Not Found":
        return "no such route; see /docs for the API"
    if exc.status_code == 405:
        return f"{request.method} is not allowed here; use {', '.join(allowed_methods(request, exc))}"
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        return TOO_DEEP  # FastAPI's "There was an error parsing the body", for JSON nested too deep
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        return "the request body could not be parsed; send JSON with Content-Type: application/json"
    return str(exc.detail) if exc.detail else _REASONS.get(exc.status_code, "error")


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request, exc))
    return response_for(request.url.path, exc.status_code, _http_exception_message(exc, request), headers)


def _out_of_range(exc: BaseException) -> bool:
    """A number the database cannot bind: SQLite's OverflowError, asyncpg's 'value out of int32 range'."""
    if isinstance(exc, OverflowError):
        return "too large to convert" in str(exc)
    return isinstance(exc, DBAPIError) and "out of int" in str(exc.orig) and "range" in str(exc.orig)


async def handle_database_range_error(request: Request, exc: Exception) -> JSONResponse:
    """A safety net behind the range checks of ids and pages: a number in the request that the database
    cannot hold is the client's error (400), not the server's. Anything else is re-raised as it was."""
    if not _out_of_range(exc):
        raise exc
    return response_for(
        request.url.path,
        400,
        "a number in the request is out of range: ids, pages and counts fit in 32 bits",
    )
