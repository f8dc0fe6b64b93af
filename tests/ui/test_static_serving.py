"""The server serves the UI's build at `/` without shadowing any API route (gpustack/server/ui.py)."""

from __future__ import annotations

import gzip

import pytest

from gpustack.server.ui import IMMUTABLE, REVALIDATE
from tests.server.conftest import RunningServer
from tests.ui.conftest import INDEX_HTML, SCRIPT


async def test_root_and_client_routes_serve_index_revalidated_every_load(built_server: RunningServer) -> None:
    async with built_server.client() as http:
        for path in ("/", "/models", "/resources/workers", "/playground/chat", "/models/3/edit"):
            response = await http.get(path)
            assert response.status_code == 200, path
            assert response.text == INDEX_HTML
            assert response.headers["content-type"].startswith("text/html")
            assert response.headers["cache-control"] == REVALIDATE


async def test_hashed_assets_are_cached_for_a_year_and_sent_gzipped_when_accepted(
    built_server: RunningServer,
) -> None:
    async with built_server.client() as http:
        response = await http.get("/assets/index-0a1b2c3d.js", headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200
        assert response.headers["cache-control"] == IMMUTABLE
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["content-type"].startswith("text/javascript")
        assert int(response.headers["content-length"]) == len(gzip.compress(SCRIPT.encode()))
        assert response.text == SCRIPT  # httpx decodes it
        plain = await http.get("/assets/index-0a1b2c3d.js", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.text == SCRIPT


async def test_unhashed_files_are_revalidated_and_an_unchanged_one_is_a_304(
    built_server: RunningServer,
) -> None:
    async with built_server.client() as http:
        first = await http.get("/favicon.svg")
        assert first.status_code == 200 and first.headers["cache-control"] == REVALIDATE
        again = await http.get("/favicon.svg", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


async def test_pages_forbid_loading_from_other_origins_and_framing(built_server: RunningServer) -> None:
    async with built_server.client() as http:
        response = await http.get("/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/assets/missing-123.js", "/robots.txt", "/assets/.hidden"])
async def test_a_file_not_in_the_build_is_a_404_not_the_app(built_server: RunningServer, path: str) -> None:
    async with built_server.client() as http:
        response = await http.get(path)
    assert response.status_code == 404
    assert response.json()["reason"] == "NotFound"


@pytest.mark.parametrize(
    "path", ["/..%2f..%2fetc/passwd", "/assets/..%2F..%2Fdb.db", "/assets/%2e%2e/%2e%2e/db.db"]
)
async def test_nothing_outside_the_build_is_reachable(built_server: RunningServer, path: str) -> None:
    async with built_server.client() as http:
        response = await http.get(path)
    assert response.status_code == 404 or (response.status_code == 200 and response.text == INDEX_HTML)
    assert "root:" not in response.text and "SQLite" not in response.text


async def test_unknown_api_paths_keep_the_api_error_shapes(built_server: RunningServer) -> None:
    async with built_server.client() as http:
        management = await http.get("/v2/no-such-thing")
        openai = await http.get("/v1/no-such-thing")
        posted = await http.post("/models", json={})
        auth = await http.get("/auth/nothing")
    assert management.status_code == 404 and management.json()["reason"] == "NotFound"
    assert openai.status_code == 404 and "error" in openai.json()
    assert posted.status_code == 404 and posted.json()["reason"] == "NotFound"
    assert auth.status_code == 404 and auth.json()["reason"] == "NotFound"


async def test_api_routes_still_answer_beside_the_ui(built_server: RunningServer) -> None:
    async with built_server.client() as http:
        assert (await http.get("/healthz")).text == "ok"
        assert (await http.get("/v2/models")).status_code == 401
        assert (await http.get("/openapi.json")).json()["info"]["title"] == "GPUStack"


async def test_without_a_build_the_page_says_how_to_make_one(unbuilt_server: RunningServer) -> None:
    async with unbuilt_server.client() as http:
        for path in ("/", "/models"):
            response = await http.get(path)
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("text/html")
            assert "npm ci" in response.text and "scripts/setup.sh" in response.text
        assert (await http.get("/healthz")).text == "ok"
