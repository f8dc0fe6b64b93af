"""Every route of the server against every kind of credential: each one reaches exactly what it may.

A new route fails `test_every_route_has_a_declared_policy` until it is given a line in POLICY, so no
route ships without someone deciding who may call it."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from fastapi.routing import APIRoute

from gpustack.schemas.routes import OpenAIRoute
from gpustack.server import security
from gpustack.server.app import routers
from tests.server.conftest import RunningServer, login
from tests.server.test_workers_api import registration

NONE, TOKEN, WORKER, USER_KEY, ADMIN_KEY, ADMIN_SESSION, PENDING_SESSION = (
    "none", "cluster token", "worker credential", "user API key", "admin API key", "admin session",
    "session with a password change due",
)  # fmt: skip
ALL = frozenset({NONE, TOKEN, WORKER, USER_KEY, ADMIN_KEY, ADMIN_SESSION, PENDING_SESSION})
ADMINS = frozenset({ADMIN_KEY, ADMIN_SESSION})
USERS = frozenset({USER_KEY, ADMIN_KEY, ADMIN_SESSION})  # users who may use the API
ANY_USER = USERS | {PENDING_SESSION}

# (method, path) -> who may call it. Loopback callers may read and set the log level (the FAQ's curl).
POLICY: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/healthz"): ALL,
    ("GET", "/readyz"): ALL,
    ("GET", "/version"): ALL,
    # Also the metrics token (--metrics-token), which is no user's credential: tests/metrics.
    ("GET", "/metrics"): ADMINS,
    ("GET", "/debug/log_level"): ALL,
    ("PUT", "/debug/log_level"): ALL,
    ("POST", "/auth/login"): ALL,
    ("POST", "/auth/logout"): ALL,
    ("POST", "/auth/update-password"): ANY_USER,
    ("GET", "/v2/users/me"): ANY_USER,
    ("GET", "/v2/users"): ADMINS,
    ("POST", "/v2/users"): ADMINS,
    ("GET", "/v2/users/{user_id}"): ADMINS,
    ("PUT", "/v2/users/{user_id}"): ADMINS,
    ("DELETE", "/v2/users/{user_id}"): ADMINS,
    ("GET", "/v2/api-keys"): USERS,
    ("POST", "/v2/api-keys"): USERS,
    ("PATCH", "/v2/api-keys/{key_id}"): USERS,
    ("DELETE", "/v2/api-keys/{key_id}"): USERS,
    ("GET", "/v2/usage"): USERS,
    ("GET", "/v2/workers"): ADMINS,
    ("GET", "/v2/workers/{worker_id}"): ADMINS,
    ("PATCH", "/v2/workers/{worker_id}"): ADMINS,
    ("DELETE", "/v2/workers/{worker_id}"): ADMINS,
    ("GET", "/v2/worker-join"): ADMINS,
    ("POST", "/v2/workers/register"): frozenset({TOKEN}),
    ("PUT", "/v2/workers/{worker_id}/status"): frozenset({WORKER}),
    ("GET", "/v2/models"): ADMINS,
    ("POST", "/v2/models"): ADMINS,
    ("GET", "/v2/models/{model_id}"): ADMINS | {WORKER},
    ("PUT", "/v2/models/{model_id}"): ADMINS,
    ("DELETE", "/v2/models/{model_id}"): ADMINS,
    ("GET", "/v2/model-instances"): ADMINS | {WORKER},
    ("GET", "/v2/model-instances/{instance_id}"): ADMINS | {WORKER},
    ("DELETE", "/v2/model-instances/{instance_id}"): ADMINS,
    ("PUT", "/v2/model-instances/{instance_id}/state"): frozenset({WORKER}),
    ("GET", "/v2/model-instances/{instance_id}/logs"): ADMINS,
    ("POST", "/v2/model-evaluations"): ADMINS,
    ("GET", "/v2/backends"): ADMINS,
    ("GET", "/v2/model-files"): ADMINS,
    ("POST", "/v2/model-files"): frozenset({WORKER}),
    ("GET", "/v2/model-files/{file_id}"): ADMINS,
    ("DELETE", "/v2/model-files/{file_id}"): ADMINS,
    ("PUT", "/v2/model-files/{file_id}/state"): frozenset({WORKER}),
    ("POST", "/v2/model-files/{file_id}/retry"): ADMINS,
    ("GET", "/v2/model-catalog"): ADMINS,
    **{("GET", f"{prefix}/{route}"): USERS for prefix in ("/v1-openai", "/v1")
       for route in ("models", "models/{model_name:path}")},
    **{("POST", f"{prefix}/{route.value}"): USERS for prefix in ("/v1-openai", "/v1")
       for route in OpenAIRoute},
}  # fmt: skip
# Routes of the documentation, which hold nothing secret.
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _routes(_server: RunningServer) -> set[tuple[str, str]]:
    found = set()
    for router in routers():
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path not in DOCS:
                for method in route.methods - {"HEAD"}:
                    found.add((method, route.path))
    return found


@dataclass
class Credentials:
    headers: dict[str, dict[str, str]]
    cookies: dict[str, dict[str, str]]
    worker_id: int


async def _credentials(server: RunningServer, admin: httpx.AsyncClient) -> Credentials:
    async with server.worker_client() as worker:
        registered = await server.register(worker, registration("matrix", 1))
    for username, pending in (("bob", False), ("carol", True)):
        response = await admin.post(
            "/v2/users",
            json={
                "username": username,
                "password": f"{username}-password",
                "require_password_change": pending,
            },
        )
        assert response.status_code == 201, response.text
    async with server.client() as bob:
        await login(bob, "bob", "bob-password")
        user_key = (await bob.post("/v2/api-keys", json={"name": "bob"})).json()["value"]
    admin_key = (await admin.post("/v2/api-keys", json={"name": "admin"})).json()["value"]
    async with server.client() as carol:
        await login(carol, "carol", "carol-password")
        pending_cookie = carol.cookies[security.SESSION_COOKIE]

    def bearer(value: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {value}"}

    return Credentials(
        headers={
            TOKEN: bearer(server.ctx.cluster_token),
            WORKER: bearer(registered["credential"]),
            USER_KEY: bearer(user_key),
            ADMIN_KEY: bearer(admin_key),
        },
        cookies={
            ADMIN_SESSION: {security.SESSION_COOKIE: admin.cookies[security.SESSION_COOKIE]},
            PENDING_SESSION: {security.SESSION_COOKIE: pending_cookie},
        },
        worker_id=registered["id"],
    )


def test_every_route_has_a_declared_policy(server: RunningServer) -> None:
    undeclared = _routes(server) - set(POLICY)
    assert not undeclared, f"routes without a line in POLICY (decide who may call them): {sorted(undeclared)}"
    stale = set(POLICY) - _routes(server)
    assert not stale, f"POLICY names routes that no longer exist: {sorted(stale)}"


async def test_each_credential_reaches_exactly_the_routes_it_may(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    credentials = await _credentials(server, admin)
    wrong: list[str] = []
    for method, path in sorted(_routes(server)):
        # Deletions aim at ids that do not exist (an allowed caller gets 404), so the matrix keeps its
        # own users, keys and worker; a worker reports for itself.
        target = path.replace("{worker_id}", str(credentials.worker_id) if method != "DELETE" else "999999")
        target = target.replace("{model_name:path}", "no-such-model")
        for name in ("user_id", "key_id", "model_id", "instance_id", "file_id"):
            target = target.replace("{" + name + "}", "999999" if method == "DELETE" else "1")
        params = {"worker_id": credentials.worker_id} if path == "/v2/model-instances" else None
        for kind in sorted(ALL):
            if path == "/auth/logout" and kind != NONE:
                continue  # it would end the session the rest of the matrix uses
            async with server.client(
                headers=credentials.headers.get(kind, {}), cookies=credentials.cookies.get(kind, {})
            ) as client:
                body = "info" if path == "/debug/log_level" else None
                json_body = None if body is not None or method in ("GET", "DELETE") else {}
                response = await client.request(method, target, params=params, content=body, json=json_body)
            allowed = kind in POLICY[(method, path)]
            refused = response.status_code in (401, 403)
            if allowed == refused:
                wrong.append(
                    f"{method} {target} with {kind}: {response.status_code} "
                    f"({'should be allowed' if allowed else 'should be refused'}): {response.text[:200]}"
                )
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", ["/v2/models", "/v2/users", "/v2/model-evaluations", "/v2/api-keys"])
async def test_an_unauthenticated_body_is_refused_whatever_it_holds(server: RunningServer, path: str) -> None:
    async with server.client() as stranger:
        response = await stranger.post(path, json={"name": "x", "username": "x", "password": "x" * 12})
    assert response.status_code == 401 and response.json()["reason"] == "Unauthorized"
