"""Browser sessions end when they should (logout, password change, user deletion), cookies are Secure
over TLS, passwords have a sensible minimum, and API keys are not the browser's credential."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from gpustack.config import ConfigError, load_config
from gpustack.server import security
from tests.conftest import require_or_skip
from tests.server.conftest import ADMIN_PASSWORD, RunningServer, login, server_settings, start_server


def _session_cookie(client: httpx.AsyncClient) -> str:
    value = client.cookies.get(security.SESSION_COOKIE)
    assert value
    return value


async def test_logout_ends_the_session_for_every_copy_of_the_cookie(server: RunningServer) -> None:
    async with server.client() as browser:
        await login(browser)
        stolen = _session_cookie(browser)
        assert (await browser.post("/auth/logout")).status_code == 204
    async with server.client(cookies={security.SESSION_COOKIE: stolen}) as thief:
        response = await thief.get("/v2/models")
    assert response.status_code == 401 and "log in again" in response.json()["message"]


async def test_a_session_token_is_stored_only_as_a_hash(server: RunningServer) -> None:
    from sqlalchemy import text

    async with server.client() as browser:
        await login(browser)
        token = _session_cookie(browser)
    async with server.ctx.session() as session:
        stored = (await session.execute(text("SELECT token_hash FROM user_sessions"))).scalars().all()
    assert stored and token not in stored and security.hash_secret(token) in stored


async def test_deleting_a_user_ends_their_sessions(server: RunningServer, admin: httpx.AsyncClient) -> None:
    created = await admin.post("/v2/users", json={"username": "bob", "password": "bob-pass-1"})
    assert created.status_code == 201
    async with server.client() as bob:
        await login(bob, "bob", "bob-pass-1")
        assert (await bob.get("/v2/users/me")).status_code == 200
        assert (await admin.delete(f"/v2/users/{created.json()['id']}")).status_code == 204
        assert (await bob.get("/v2/users/me")).status_code == 401


async def test_an_admin_setting_a_users_password_ends_that_users_sessions(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    created = (await admin.post("/v2/users", json={"username": "carol", "password": "carol-pass"})).json()
    async with server.client() as carol:
        await login(carol, "carol", "carol-pass")
        await admin.put(f"/v2/users/{created['id']}", json={"password": "carol-new-pass"})
        assert (await carol.get("/v2/users/me")).status_code == 401


async def test_a_password_change_due_blocks_the_browser_but_not_the_users_api_keys(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    key = (await admin.post("/v2/api-keys", json={"name": "ci"})).json()["value"]
    me = (await admin.get("/v2/users/me")).json()
    async with server.client(headers={"Authorization": f"Bearer {key}"}) as program:
        assert (await program.get("/v2/models")).status_code == 200  # now cached as verified
        assert (
            await admin.put(f"/v2/users/{me['id']}", json={"require_password_change": True})
        ).status_code == 200
        assert (await program.get("/v2/models")).status_code == 200
    blocked = await admin.get("/v2/models")
    assert blocked.status_code == 403 and "change your password" in blocked.json()["message"]


@pytest.mark.parametrize("password", ["short", "1234567"])
async def test_a_password_under_eight_characters_is_refused(
    server: RunningServer, admin: httpx.AsyncClient, password: str
) -> None:
    response = await admin.post(
        "/auth/update-password", json={"current_password": ADMIN_PASSWORD, "new_password": password}
    )
    assert response.status_code == 400 and "at least 8 characters" in response.json()["message"]
    with pytest.raises(ConfigError, match="--bootstrap-password: password must be at least 8"):
        load_config({"bootstrap_password": password}, {})


async def test_the_generated_admin_password_file_is_removed_once_changed(
    tmp_path: Path, database_url: str, clean_env: None
) -> None:
    settings = server_settings(tmp_path, database_url)
    del settings["bootstrap_password"]
    instance, stop, task, url = await start_server(settings)
    try:
        initial = Path(settings["data_dir"]) / "initial_admin_password"  # type: ignore[arg-type]
        password = initial.read_text().strip()
        async with httpx.AsyncClient(base_url=url) as browser:
            await login(browser, "admin", password)
            changed = await browser.post(
                "/auth/update-password", json={"current_password": password, "new_password": "chosen-by-me"}
            )
            assert changed.status_code == 200, changed.text
        assert not initial.exists()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def _self_signed(directory: Path) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    require_or_skip(openssl is not None, "openssl (Debian package openssl)")
    assert openssl is not None
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(key), str(cert)


async def test_the_session_cookie_is_secure_over_tls(
    tmp_path: Path, database_url: str, clean_env: None
) -> None:
    key, cert = _self_signed(tmp_path)
    settings = server_settings(tmp_path, database_url, ssl_keyfile=key, ssl_certfile=cert)
    instance, stop, task, url = await start_server({**settings})
    try:
        https = url.replace("http://", "https://")
        async with httpx.AsyncClient(base_url=https, verify=False) as browser:
            response = await browser.post(
                "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
        assert response.status_code == 200
        assert "secure" in response.headers["set-cookie"].lower()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@pytest.mark.parametrize("trusted", [True, False])
async def test_the_cookie_is_secure_behind_a_trusted_proxy_only(
    tmp_path: Path, database_url: str, clean_env: None, trusted: bool
) -> None:
    extra = {"trusted_proxies": "127.0.0.1"} if trusted else {}
    instance, stop, task, url = await start_server(server_settings(tmp_path, database_url, **extra))
    try:
        async with httpx.AsyncClient(base_url=url) as browser:
            response = await browser.post(
                "/auth/login",
                json={"username": "admin", "password": ADMIN_PASSWORD},
                headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"},
            )
        assert response.status_code == 200
        assert ("secure" in response.headers["set-cookie"].lower()) is trusted
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def test_tls_needs_both_files_and_moves_the_default_port_to_443(tmp_path: Path) -> None:
    key, cert = _self_signed(tmp_path)
    with pytest.raises(ConfigError, match="--ssl-keyfile: needs --ssl-certfile too"):
        load_config({"ssl_keyfile": key}, {})
    with pytest.raises(ConfigError, match="--ssl-certfile: cannot read"):
        load_config({"ssl_keyfile": key, "ssl_certfile": str(tmp_path / "missing.pem")}, {})
    assert load_config({"ssl_keyfile": key, "ssl_certfile": cert}, {}).port == 443
    assert load_config({}, {}).port == 80
    assert load_config({"ssl_keyfile": key, "ssl_certfile": cert, "port": "8443"}, {}).port == 8443
