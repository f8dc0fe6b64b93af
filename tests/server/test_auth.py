"""Logins, the first admin, password changes, API keys and who may do what."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import ADMIN_PASSWORD, RunningServer, login, server_settings, start_server


async def test_without_credentials_management_routes_answer_401_even_from_localhost(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        for path in ("/v2/workers", "/v2/models", "/v2/model-instances", "/v2/users", "/v2/api-keys"):
            response = await client.get(path)
            assert response.status_code == 401, path
            body = response.json()
            assert body["code"] == 401 and body["reason"] == "Unauthorized" and body["message"]


async def test_wrong_password_is_refused(server: RunningServer) -> None:
    async with server.client() as client:
        response = await client.post("/auth/login", json={"username": "admin", "password": "nope-nope"})
        assert response.status_code == 401
        assert response.json()["message"] == "wrong username or password"


async def test_api_key_is_shown_once_stored_hashed_and_works_until_deleted(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    created = await admin.post("/v2/api-keys", json={"name": "ci"})
    assert created.status_code == 201
    value = created.json()["value"]
    assert re.fullmatch(r"gpustack_[0-9a-f]{16}_[0-9a-f]{32}", value)
    listed = (await admin.get("/v2/api-keys")).json()["items"]
    assert [k["name"] for k in listed] == ["ci"] and "value" not in listed[0]
    secret = value.split("_")[2]
    async with server.ctx.session() as session:
        from sqlalchemy import text

        stored = (await session.execute(text("SELECT hashed_secret_key FROM api_keys"))).scalar_one()
    assert secret not in stored
    async with server.client(headers={"Authorization": f"Bearer {value}"}) as client:
        assert (await client.get("/v2/models")).status_code == 200
        assert (await admin.delete(f"/v2/api-keys/{created.json()['id']}")).status_code == 204
        assert (await client.get("/v2/models")).status_code == 401


async def test_expired_api_key_says_so(admin: httpx.AsyncClient, server: RunningServer) -> None:
    value = (await admin.post("/v2/api-keys", json={"name": "short", "expires_in": 1})).json()["value"]
    import asyncio

    await asyncio.sleep(1.2)
    async with server.client(headers={"Authorization": f"Bearer {value}"}) as client:
        response = await client.get("/v2/models")
    assert response.status_code == 401 and "expired" in response.json()["message"]


async def test_non_admin_users_cannot_manage_but_can_use_their_keys(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    created = await admin.post("/v2/users", json={"username": "alice", "password": "alice-pass"})
    assert created.status_code == 201
    async with server.client() as alice:
        await login(alice, "alice", "alice-pass")
        for path in ("/v2/workers", "/v2/models", "/v2/users"):
            response = await alice.get(path)
            assert response.status_code == 403, path
        assert (await alice.get("/v2/users/me")).json()["username"] == "alice"
        assert (await alice.post("/v2/api-keys", json={"name": "mine"})).status_code == 201
        assert len((await admin.get("/v2/api-keys")).json()["items"]) == 0  # keys are per user


async def test_user_crud_validates_and_protects_the_last_admin(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    bad = await admin.post("/v2/users", json={"username": "bob", "password": "x"})
    assert (
        bad.status_code == 400 and "password: password must be at least 8 characters" in bad.json()["message"]
    )
    bob = (await admin.post("/v2/users", json={"username": "bob", "password": "bob-pass"})).json()
    duplicate = await admin.post("/v2/users", json={"username": "bob", "password": "bob-pass"})
    assert duplicate.status_code == 409
    updated = await admin.put(f"/v2/users/{bob['id']}", json={"full_name": "Bob B", "is_admin": True})
    assert updated.json()["full_name"] == "Bob B" and updated.json()["is_admin"]
    me = (await admin.get("/v2/users/me")).json()
    assert (await admin.delete(f"/v2/users/{me['id']}")).status_code == 400
    assert (await admin.delete(f"/v2/users/{bob['id']}")).status_code == 204
    demote = await admin.put(f"/v2/users/{me['id']}", json={"is_admin": False})
    assert demote.status_code == 400 and "last administrator" in demote.json()["message"]
    page = (await admin.get("/v2/users", params={"perPage": 1, "page": 1})).json()
    assert page["pagination"] == {"page": 1, "perPage": 1, "total": 1, "totalPage": 1}


async def test_generated_admin_password_is_in_the_data_dir_and_must_be_changed(
    tmp_path: Path, database_url: str, clean_env: None
) -> None:
    settings = server_settings(tmp_path, database_url)
    del settings["bootstrap_password"]
    server, stop, task, url = await start_server(settings)
    try:
        password = (tmp_path / "data" / "initial_admin_password").read_text().strip()
        assert len(password) >= 12
        async with httpx.AsyncClient(base_url=url) as client:
            await login(client, "admin", password)
            blocked = await client.get("/v2/models")
            assert blocked.status_code == 403 and "change your password" in blocked.json()["message"]
            assert (await client.get("/v2/users/me")).json()["require_password_change"] is True
            same = await client.post(
                "/auth/update-password", json={"current_password": password, "new_password": password}
            )
            assert same.status_code == 400
            changed = await client.post(
                "/auth/update-password", json={"current_password": password, "new_password": "a-new-password"}
            )
            assert changed.status_code == 200 and changed.json()["require_password_change"] is False
            assert (await client.get("/v2/models")).status_code == 200
    finally:
        stop.set()
        await task


async def test_a_password_change_ends_older_sessions(server: RunningServer, admin: httpx.AsyncClient) -> None:
    async with server.client() as other:
        await login(other)
        response = await admin.post(
            "/auth/update-password", json={"current_password": ADMIN_PASSWORD, "new_password": "another-one"}
        )
        assert response.status_code == 200
        assert (await admin.get("/v2/models")).status_code == 200  # the changer got a fresh cookie
        assert (await other.get("/v2/models")).status_code == 401


async def test_cluster_token_is_only_for_worker_routes(server: RunningServer) -> None:
    async with server.worker_client() as worker:
        assert (await worker.get("/v2/users")).status_code == 403
        assert (await worker.post("/v2/api-keys", json={"name": "x"})).status_code == 403


@pytest.mark.parametrize("level", ["debug", "trace", "info"])
async def test_log_level_changes_at_run_time_from_localhost(server: RunningServer, level: str) -> None:
    async with server.client() as client:
        response = await client.put("/debug/log_level", content=level)
        assert response.status_code == 200 and response.text.strip() == level
        assert (await client.get("/debug/log_level")).text.strip() == level
        bad = await client.put("/debug/log_level", content="loud")
        assert bad.status_code == 400 and "trace, debug, info" in bad.text
    async with server.client() as client:
        await client.put("/debug/log_level", content="info")


async def test_health_readiness_and_version(server: RunningServer) -> None:
    async with server.client() as client:
        assert (await client.get("/healthz")).text == "ok"
        assert (await client.get("/readyz")).text == "ok"
        assert (await client.get("/version")).json()["version"]
