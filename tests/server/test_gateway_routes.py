"""Every OpenAI route a backend serves reaches its engine through the gateway, driven by the backend
contract, with the official openai client; a route the model's backend does not serve is a 400 that
names the ones it does; uploads stream on to the engine with the model taken from the form."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.server.conftest import RunningServer
from tests.server.stub_models import api_key, stub_worker, until_routed, wait_for

ALL_ROUTES = [
    "chat/completions", "completions", "embeddings", "rerank", "audio/transcriptions", "audio/translations",
    "audio/speech", "images/generations", "images/edits", "responses",
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the client's translations call
@pytest.mark.parametrize("prefix", ["/v1", "/v1-openai"])
async def test_each_route_a_backend_serves_reaches_its_engine_with_the_openai_client(
    server: RunningServer, admin: httpx.AsyncClient, prefix: str
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "everything", routes=ALL_ROUTES)
        key = await api_key(admin)
        async with server.client(headers={"Authorization": f"Bearer {key}"}) as http:
            await until_routed(http, "everything")
            client = openai.AsyncOpenAI(base_url=f"{server.url}{prefix}", api_key=key, max_retries=0)
            chat = await client.chat.completions.create(
                model="everything", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
            assert chat.choices[0].message.content == "tok tok tok " and chat.usage is not None
            completion = await client.completions.create(model="everything", prompt="x", max_tokens=2)
            assert completion.choices[0].text == "tok tok "
            embeddings = await client.embeddings.create(model="everything", input=["a", "b"])
            assert [e.embedding for e in embeddings.data] == [[0.25, -0.5, 0.125]] * 2
            heard = await client.audio.transcriptions.create(
                model="everything", file=("hello.wav", b"RIFF" + b"\0" * 4000, "audio/wav")
            )
            assert heard.text.startswith("received ") and int(heard.text.split()[1]) > 4000
            translated = await client.audio.translations.create(
                model="everything", file=("hello.wav", b"RIFF" + b"\0" * 100, "audio/wav")
            )
            assert translated.text.startswith("received ")
            speech = await client.audio.speech.create(model="everything", voice="alloy", input="hello")
            assert speech.content.startswith(b"RIFF")
            image = await client.images.generate(model="everything", prompt="a cat")
            assert image.data and image.data[0].b64_json == "AAAA"
            edited = await client.images.edit(
                model="everything", image=("cat.png", b"\x89PNG" + b"\0" * 64, "image/png"), prompt="hat"
            )
            assert edited.data and edited.data[0].b64_json == "AAAA"
            response = await client.responses.create(model="everything", input="hi")
            assert response.output_text == "stub"
            reranked = await http.post(
                f"{prefix}/rerank", json={"model": "everything", "query": "q", "documents": ["a", "b", "c"]}
            )
            assert reranked.status_code == 200, reranked.text
            assert [r["index"] for r in reranked.json()["results"]] == [0, 1, 2]


async def test_a_route_the_backend_does_not_serve_is_a_400_naming_those_it_does(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "chatty", routes=["chat/completions", "completions"])
        key = await api_key(admin)
        async with server.client(headers={"Authorization": f"Bearer {key}"}) as http:
            await until_routed(http, "chatty")
            client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
            with pytest.raises(openai.BadRequestError) as refused:
                await client.embeddings.create(model="chatty", input="x")
            message = refused.value.body["message"]  # type: ignore[index]
            assert "does not serve /v1/embeddings" in message
            assert "it serves /v1/chat/completions, /v1/completions" in message
            with pytest.raises(openai.BadRequestError):
                await client.audio.transcriptions.create(model="chatty", file=("a.wav", b"RIFF", "audio/wav"))


async def test_an_upload_reaches_the_engine_before_the_client_has_sent_all_of_it(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        (engine,) = await worker.deploy(admin, "ears", routes=["audio/transcriptions"])
        key = await api_key(admin)
        boundary = "gpustack-test-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nears\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        part = b"\0" * 65536
        tail = f"\r\n--{boundary}--\r\n".encode()

        async def body() -> AsyncIterator[bytes]:
            yield head + part
            # The rest is sent only once the engine holds the first part: a gateway that waited for the
            # whole body would never get it, and the test would time out.
            await wait_for(lambda: asyncio.to_thread(lambda: engine.stats()["uploading"] > 0), timeout=20)
            yield part + tail

        async with server.client(headers={"Authorization": f"Bearer {key}"}) as http:
            await until_routed(http, "ears", "audio/transcriptions")
            response = await http.post(
                "/v1/audio/transcriptions",
                content=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        assert response.status_code == 200, response.text
        assert response.json()["text"] == f"received {len(head) + 2 * len(part) + len(tail)} bytes"


async def test_the_model_of_a_form_is_found_after_the_file_too(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with stub_worker(server) as worker:
        await worker.deploy(admin, "ears", routes=["audio/transcriptions"])
        key = await api_key(admin)
        async with server.client(headers={"Authorization": f"Bearer {key}"}) as http:
            await until_routed(http, "ears", "audio/transcriptions")
            boundary = "b0undary"
            form = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
                + "x" * 100_000
                + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nears\r\n'
                f"--{boundary}--\r\n"
            ).encode()
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            response = await http.post("/v1/audio/transcriptions", content=form, headers=headers)
            assert response.status_code == 200, response.text
            no_model = form.replace(b'name="model"', b'name="language"')
            missing = await http.post("/v1/audio/transcriptions", content=no_model, headers=headers)
            assert missing.status_code == 400 and "'model' field" in missing.json()["error"]["message"]
            not_a_form = await http.post("/v1/audio/transcriptions", json={"model": "ears"})
            assert not_a_form.status_code == 400 and "multipart/form-data" in not_a_form.text
