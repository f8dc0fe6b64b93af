"""The OpenAPI document as the API really answers: bad input is a 400 in the API's error shape (FastAPI
would document a 422 it never sends), with the 401, 403, 404 and 413 each operation can give."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from gpustack.server.edge import PUBLIC_PATHS
from gpustack.server.errors import ErrorResponse, OpenAIErrorResponse
from gpustack.server.gateway.paths import speaks_openai

_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

_DESCRIPTIONS = {
    "400": "Bad input: the message says which field and why",
    "401": "No credentials, or invalid ones",
    "403": "These credentials may not do this",
    "404": "No such resource",
    "413": "The request body is larger than this route accepts",
}


def _schemas() -> dict[str, Any]:
    """Both error models, with their nested definitions, as components."""
    schemas: dict[str, Any] = {}
    for model in (ErrorResponse, OpenAIErrorResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _error(status: str, model: str) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
    }


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with FastAPI's 422 entries replaced by what the API answers. Changes `spec` in place."""
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        components.pop(name, None)
    components.update(_schemas())
    for path, operations in spec.get("paths", {}).items():
        model = OpenAIErrorResponse.__name__ if speaks_openai(path) else ErrorResponse.__name__
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            wanted = []
            if operation.get("parameters") or operation.get("requestBody"):
                wanted.append("400")
            if path not in PUBLIC_PATHS:
                wanted += ["401", "403"]
            if "{" in path:
                wanted.append("404")
            if operation.get("requestBody"):
                wanted.append("413")
            for status in wanted:
                responses.setdefault(status, _error(status, model))
    return spec


def install(app: FastAPI) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi
    cache: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        if "spec" not in cache:
            cache["spec"] = document_errors(generate())
        return cache["spec"]

    app.openapi = openapi  # type: ignore[method-assign]
