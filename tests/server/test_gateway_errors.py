"""The gateway's answers when it cannot serve: OpenAI's error shape, with the right status."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.server.conftest import RunningServer


async def api_key(admin: httpx.AsyncClient) -> str:
    return str((await admin.post("/v2/api-keys", json={"name": "gw"})).json()["value"])


@pytest.mark.parametrize("prefix", ["/v1-openai", "/v1"])
async def test_unknown_model_malformed_body_and_no_instance(
    server: RunningServer, admin: httpx.AsyncClient, prefix: str
) -> None:
    key = await api_key(admin)
    await admin.post("/v2/models", json={"name": "idle", "local_path": "/nowhere/m.gguf", "replicas": 0})
    async with server.client(headers={"Authorization": f"Bearer {key}"}) as client:
        cases = [
            (b'{"model": "nope", "messages": []}', 404, "model 'nope' does not exist"),
            (b'{"model": "idle", "messages": []}', 503, "has no running instance"),
            (b"{not json", 400, "not valid JSON"),
            (b'{"messages": []}', 400, "'model' is required"),
            (b"[1, 2]", 400, "must be a JSON object"),
        ]
        for body, status, message in cases:
            response = await client.post(f"{prefix}/chat/completions", content=body)
            assert response.status_code == status, body
            error = response.json()["error"]
            assert message in error["message"] and error["type"], body


async def test_gateway_needs_a_key_or_session(server: RunningServer) -> None:
    async with server.client() as client:
        response = await client.post("/v1-openai/chat/completions", json={"model": "x"})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    async with server.client(
        headers={"Authorization": "Bearer gpustack_0000000000000000_" + "0" * 32}
    ) as client:
        assert (await client.post("/v1/embeddings", json={"model": "x"})).status_code == 401


async def test_openai_client_sees_typed_errors_and_the_model_list(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    key = await api_key(admin)
    await admin.post("/v2/models", json={"name": "idle", "local_path": "/nowhere/m.gguf", "replicas": 0})
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1-openai", api_key=key, max_retries=0)
    models = await client.models.list()
    assert [m.id for m in models.data] == ["idle"]
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.InternalServerError) as unavailable:
        await client.completions.create(model="idle", prompt="hi")
    assert unavailable.value.status_code == 503
    wrong = openai.AsyncOpenAI(base_url=f"{server.url}/v1-openai", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await wrong.models.list()


@pytest.mark.parametrize("prefix", ["/v1", "/v1-openai"])
async def test_the_openai_client_lists_and_retrieves_models_at_either_base_url(
    server: RunningServer, admin: httpx.AsyncClient, prefix: str
) -> None:
    key = await api_key(admin)
    await admin.post("/v2/models", json={"name": "idle", "local_path": "/nowhere/m.gguf", "replicas": 0})
    client = openai.AsyncOpenAI(base_url=f"{server.url}{prefix}", api_key=key, max_retries=0)
    models = await client.models.list()
    assert models.data is not None and [m.id for m in models.data] == ["idle"]
    model = await client.models.retrieve("idle")
    assert model.id == "idle" and model.object == "model" and model.owned_by == "gpustack"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("nope")
    assert "does not exist" in str(missing.value)


@pytest.mark.parametrize("path", ["/v1/no-such-route", "/v1/images/generations", "/v1-openai/responses"])
async def test_an_unknown_openai_route_is_a_404_in_openais_shape(
    server: RunningServer, admin: httpx.AsyncClient, path: str
) -> None:
    key = await api_key(admin)
    async with server.client(headers={"Authorization": f"Bearer {key}"}) as client:
        response = await client.post(path, json={"model": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] and "code" not in response.json()


async def test_the_management_api_lives_under_v2(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/v2/models")).json()["items"] == []
    listed = await admin.get("/v1/models")  # the OpenAI list, for a session as for a key
    assert listed.status_code == 200 and listed.json() == {"object": "list", "data": []}
