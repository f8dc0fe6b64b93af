"""Numbers out of range: ids and pages no database can hold are a 404 or a 400 in the API's error shape,
never a 500; booleans are not numbers; the OpenAPI document says what the API answers; methods a route
does not have get a 405 that lists the ones it has."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.conftest import RunningServer

# Past PostgreSQL's INTEGER, past SQLite's INTEGER, and past both by far.
HUGE = [2**31, 2**63, 2**64, 10**30]

ADMIN_ID_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v2/models/{}", None),
    ("PUT", "/v2/models/{}", {"description": "x"}),
    ("DELETE", "/v2/models/{}", None),
    ("GET", "/v2/workers/{}", None),
    ("PATCH", "/v2/workers/{}", {"labels": {"a": "b"}}),
    ("DELETE", "/v2/workers/{}", None),
    ("GET", "/v2/users/{}", None),
    ("PUT", "/v2/users/{}", {"full_name": "x"}),
    ("DELETE", "/v2/users/{}", None),
    ("GET", "/v2/model-instances/{}", None),
    ("DELETE", "/v2/model-instances/{}", None),
    ("GET", "/v2/model-instances/{}/logs", None),
    ("DELETE", "/v2/api-keys/{}", None),
]


def assert_error_shape(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    body = response.json()
    assert body["code"] == status and body["reason"] and body["message"], body
    return dict(body)


@pytest.mark.parametrize("number", HUGE + [0, -1])
async def test_ids_no_database_can_hold_are_not_found(admin: httpx.AsyncClient, number: int) -> None:
    for method, template, body in ADMIN_ID_ROUTES:
        response = await admin.request(method, template.format(number), json=body)
        message = assert_error_shape(response, 404)["message"]
        assert str(number) in message and "not found" in message


@pytest.mark.parametrize("number", HUGE)
async def test_worker_routes_with_huge_ids_do_not_fail(server: RunningServer, number: int) -> None:
    async with server.worker_client() as worker:
        for path, body in (
            (f"/v2/workers/{number}/status", {"status": {}}),
            (f"/v2/model-instances/{number}/state", {"worker_id": 1, "state": "running"}),
        ):
            response = await worker.put(path, json=body)
            assert response.status_code in (401, 403, 404), (path, response.text)
            assert response.json()["message"]


@pytest.mark.parametrize(
    "query",
    [
        {"page": 2**63},
        {"page": 2**31},
        {"page": 10**30},
        {"perPage": 2**63},
        {"page": 0},
    ],
)
@pytest.mark.parametrize(
    "path", ["/v2/models", "/v2/workers", "/v2/users", "/v2/api-keys", "/v2/model-instances"]
)
async def test_pages_out_of_range_are_a_400_that_names_the_parameter(
    admin: httpx.AsyncClient, path: str, query: dict[str, int]
) -> None:
    response = await admin.get(path, params=query)
    message = assert_error_shape(response, 400)["message"]
    assert next(iter(query)) in message


@pytest.mark.parametrize("name", ["model_id", "worker_id"])
@pytest.mark.parametrize("number", HUGE)
async def test_instance_filters_out_of_range_are_a_400(
    admin: httpx.AsyncClient, name: str, number: int
) -> None:
    for watch in ("false", "true"):
        response = await admin.get("/v2/model-instances", params={name: number, "watch": watch})
        message = assert_error_shape(response, 400)["message"]
        assert name in message


@pytest.mark.parametrize("value", [True, False, 5.0, "5", 0, -1, 10**30])
async def test_api_key_expiry_must_be_a_whole_positive_number(admin: httpx.AsyncClient, value: Any) -> None:
    response = await admin.post("/v2/api-keys", json={"name": "k", "expires_in": value})
    assert "expires_in" in assert_error_shape(response, 400)["message"]
    assert (await admin.get("/v2/api-keys")).json()["items"] == []


async def test_api_key_expiry_in_seconds_still_works(admin: httpx.AsyncClient) -> None:
    response = await admin.post("/v2/api-keys", json={"name": "k", "expires_in": 3600})
    assert response.status_code == 201 and response.json()["expires_at"]


async def test_openapi_documents_400_with_the_error_model_and_no_422(server: RunningServer) -> None:
    async with server.client() as client:
        spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorResponse"]["required"]) == {"code", "reason", "message"}
    assert schemas["OpenAIErrorResponse"]["required"] == ["error"]
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            takes_input = operation.get("parameters") or operation.get("requestBody")
            if not takes_input:
                continue
            checked += 1
            error = responses["400"]["content"]["application/json"]["schema"]["$ref"]
            expected = "OpenAIErrorResponse" if path.startswith(("/v1/", "/v1-openai/")) else "ErrorResponse"
            assert error == f"#/components/schemas/{expected}", (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if operation.get("requestBody"):
                assert "413" in responses, (method, path)
    assert checked > 20


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v2/models", {"GET", "POST"}),
        ("/v2/models/1", {"GET", "PUT", "DELETE"}),
        ("/healthz", {"GET"}),
        ("/v1/chat/completions", {"POST"}),
    ],
)
@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "PATCH"])
async def test_unsupported_methods_answer_405_with_allow(
    server: RunningServer, path: str, allowed: set[str], method: str
) -> None:
    async with server.client() as client:
        response = await client.request(method, path)
    assert response.status_code == 405
    assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}
    assert method not in response.headers["allow"]
    body = response.json()
    assert body["error"]["message"] if "error" in body else body["message"], body


@pytest.mark.parametrize("pid", [2**31, 2**63])
async def test_a_number_in_a_body_too_large_for_the_database_is_a_400(
    server: RunningServer, admin: httpx.AsyncClient, smollm2: str, pid: int
) -> None:
    """The safety net behind the checked ranges: any integer a column cannot hold is the client's error."""
    from tests.server.test_models_api import instances, wait_for
    from tests.server.test_workers_api import registration

    async def scheduled() -> list[dict]:
        return [i for i in await instances(admin) if i["state"] == "scheduled"]

    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("big-pid", 1))
        await admin.post("/v2/models", json={"name": "smol", "local_path": smollm2})
        [instance] = await wait_for(scheduled)
        response = await worker.put(
            f"/v2/model-instances/{instance['id']}/state",
            json={"worker_id": registered["id"], "state": "starting", "pid": pid},
        )
    if pid < 2**63 and server.config.database_url.startswith("sqlite"):
        assert response.status_code == 200  # SQLite's INTEGER holds 64 bits
        return
    assert "out of range" in assert_error_shape(response, 400)["message"]
