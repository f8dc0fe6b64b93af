"""Domain errors of the management API and their JSON form {"code", "reason", "message"}."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


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


class ServiceUnavailable(ApiError):
    status_code = 503
    reason = "ServiceUnavailable"


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
    return error_response(exc.status_code, exc.reason, exc.message)


async def handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "BadRequest", describe_validation_error(exc))


async def handle_stale_data(_request: Request, _exc: Exception) -> JSONResponse:
    return error_response(409, "Conflict", "the resource changed while this request ran; try again")


async def handle_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    reasons = {404: "NotFound", 405: "MethodNotAllowed", 401: "Unauthorized", 403: "Forbidden"}
    message = str(exc.detail) if exc.detail else reasons.get(exc.status_code, "error")
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = "no such route; see /docs for the API"
    return error_response(exc.status_code, reasons.get(exc.status_code, "Error"), message)
