"""What an operator sees of the gateway: an X-Request-ID on every answer (the client's own when it sent
one, passed to the engine), one access log line per request, CORS only when enabled and never the
engine's, and an engine that dies mid-stream ending the stream with an OpenAI error event and one line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from gpustack.log import quiet_already_logged
from tests.server.conftest import RunningServer, login, server_settings, start_server
from tests.server.stub_models import api_key, stub_worker, until_routed

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_every_answer_has_a_request_id_and_the_clients_own_reaches_the_engine(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "m")
        key = await api_key(admin)
        async with server.client(headers={"Authorization": f"Bearer {key}"}) as http:
            await until_routed(http, "m")
            mine = await http.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "trace-42"})
            assert mine.headers["x-request-id"] == "trace-42"
            assert mine.headers["x-stub-saw-request-id"] == "trace-42"  # the engine got the same id
            generated = await http.post("/v1/chat/completions", json=CHAT)
            assert len(generated.headers["x-request-id"]) == 32
            assert generated.headers["x-stub-saw-request-id"] == generated.headers["x-request-id"]
            unusable = await http.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "a b\tc"})
            assert unusable.headers["x-request-id"] != "a b\tc"
            for response in (
                await http.post("/v1/chat/completions", json={"model": "nope"}),  # the gateway's own error
                await http.get("/v1/models"),
                await admin.get("/v2/models"),
                await http.get("/healthz"),
            ):
                assert len(response.headers["x-request-id"]) == 32


async def test_one_access_log_line_per_request_with_model_status_and_tokens(
    server: RunningServer, admin: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "m")
        key = await api_key(admin)
        async with server.client(headers={"Authorization": f"Bearer {key}"}) as http:
            await until_routed(http, "m")
            with caplog.at_level(logging.INFO, logger="gpustack.server.gateway.access"):
                caplog.clear()
                await http.post(
                    "/v1/chat/completions", json={**CHAT, "max_tokens": 3}, headers={"X-Request-ID": "r1"}
                )
                await http.post(
                    "/v1/chat/completions", json={**CHAT, "model": "nope"}, headers={"X-Request-ID": "r2"}
                )
    lines = [r.getMessage() for r in caplog.records if r.name == "gpustack.server.gateway.access"]
    assert len(lines) == 2, lines
    assert lines[0].startswith('r1 "POST /v1/chat/completions" 200') and "model=m" in lines[0]
    assert "tokens=" in lines[0] and "+3" in lines[0] and "user=admin" in lines[0]
    assert lines[1].startswith('r2 "POST /v1/chat/completions" 404') and "model=nope" in lines[1]


async def test_the_engines_own_cors_header_is_never_passed_on_and_cors_is_off_by_default(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "m")
        key = await api_key(admin)
        async with server.client(
            headers={"Authorization": f"Bearer {key}", "Origin": "http://a.example"}
        ) as http:
            await until_routed(http, "m")
            response = await http.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 200
            assert not any(name.lower().startswith("access-control-") for name in response.headers)
            preflight = await http.options(
                "/v1/chat/completions", headers={"Access-Control-Request-Method": "POST"}
            )
            assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers


@pytest.fixture
async def cors_server(tmp_path: Path, database_url: str, clean_env: None) -> AsyncIterator[RunningServer]:
    settings = server_settings(
        tmp_path, database_url, enable_cors=True, allow_origins="http://app.example, http://localhost:3000"
    )
    instance, stop, task, url = await start_server(settings)
    assert instance.ctx is not None
    yield RunningServer(url, instance.config, instance.ctx)
    stop.set()
    await asyncio.wait_for(task, 60)


async def test_with_cors_enabled_preflights_are_answered_and_allowed_origins_get_the_headers(
    cors_server: RunningServer,
) -> None:
    async with cors_server.client() as admin:
        await login(admin)
        async with stub_worker(cors_server) as worker:
            await worker.deploy(admin, "m")
            key = await api_key(admin)
            async with cors_server.client(headers={"Authorization": f"Bearer {key}"}) as http:
                await until_routed(http, "m")
                preflight = await http.options(
                    "/v1/chat/completions",
                    headers={
                        "Origin": "http://app.example",
                        "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
                    },
                )
                assert preflight.status_code == 204
                assert preflight.headers["access-control-allow-origin"] == "http://app.example"
                assert "POST" in preflight.headers["access-control-allow-methods"]
                assert (
                    preflight.headers["access-control-allow-headers"]
                    == "authorization, content-type, x-stainless-os"
                )
                refused = await http.options(
                    "/v2/models",
                    headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
                )
                assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
                assert "--allow-origins" in refused.json()["message"]
                answer = await http.post(
                    "/v1/chat/completions", json=CHAT, headers={"Origin": "http://app.example"}
                )
                assert answer.status_code == 200
                # Ours, once: the engine's empty Access-Control-Allow-Origin is gone.
                assert answer.headers.get_list("access-control-allow-origin") == ["http://app.example"]
                assert "X-Request-ID" in answer.headers["access-control-expose-headers"]
                other = await http.post(
                    "/v1/chat/completions", json=CHAT, headers={"Origin": "http://evil.example"}
                )
                assert "access-control-allow-origin" not in other.headers


async def test_an_engine_that_dies_mid_stream_ends_it_with_an_openai_error_event_and_one_log_line(
    server: RunningServer, admin: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    quiet_already_logged()  # as `gpustack start` does: the HTTP server logs no traceback for it
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "m")
        key = await api_key(admin)
        async with server.client(headers={"Authorization": f"Bearer {key}"}) as http:
            await until_routed(http, "m")
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=8,
                extra_body={"stub": {"break_after": 3}},
            )  # fmt: skip
            received = []
            with pytest.raises(openai.APIError) as broke:
                async for chunk in stream:
                    received.append(chunk)
            assert len(received) == 3 and "stopped in the middle" in broke.value.message
            with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}],
                    extra_body={"stub": {"truncate": True}},
                )  # fmt: skip
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "middle" in r.getMessage()]
    assert warnings and all(r.exc_info is None for r in caplog.records if r.levelno >= logging.WARNING)
