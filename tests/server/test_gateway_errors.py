"""The gateway's answers when it cannot serve: OpenAI's error shape, with the right status."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.server.conftest import RunningServer


async def api_key(admin: httpx.AsyncClient) -> str:
    return str((await admin.post("/v1/api-keys", json={"name": "gw"})).json()["value"])


@pytest.mark.parametrize("prefix", ["/v1-openai", "/v1"])
async def test_unknown_model_malformed_body_and_no_instance(
    server: RunningServer, admin: httpx.AsyncClient, prefix: str
) -> None:
    key = await api_key(admin)
    await admin.post("/v1/models", json={"name": "idle", "local_path": "/nowhere/m.gguf", "replicas": 0})
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
    await admin.post("/v1/models", json={"name": "idle", "local_path": "/nowhere/m.gguf", "replicas": 0})
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
