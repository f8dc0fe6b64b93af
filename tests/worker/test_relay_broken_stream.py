"""An engine that crashes mid-stream: the relay logs one line (no traceback), an event stream ends with an
error its OpenAI client raises, and any other body is cut off so that its client sees it incomplete."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from gpustack.log import setup_logging
from gpustack.utils.relay import stream_back
from gpustack.utils.uvicorn_server import bind_socket, make_server
from tests.conftest import free_port

# A stand-in engine, as a real process: it answers one request with the start of a chunked body and
# then dies (os._exit), as llama.cpp's server does when it crashes mid-generation.
CRASHING_ENGINE = textwrap.dedent(
    """
    import os, socket, sys
    port, content_type = int(sys.argv[1]), sys.argv[2]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    print("ready", flush=True)
    connection, _ = listener.accept()
    request = b""
    while b"\\r\\n\\r\\n" not in request:
        request += connection.recv(65536)
    head = (
        "HTTP/1.1 200 OK\\r\\nContent-Type: " + content_type + "\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n"
    ).encode()
    if content_type.startswith("text/event-stream"):
        parts = [
            b'data: {"id":"1","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\\n\\n'
        ]
    else:
        parts = [b'{"id":"1","object":"chat.comp']
    connection.sendall(head + b"".join(b"%x\\r\\n%s\\r\\n" % (len(p), p) for p in parts))
    os._exit(1)
    """
)


@dataclass
class Relay:
    url: str
    records: list[logging.LogRecord]


@pytest.fixture
def collected_logs() -> Iterator[list[logging.LogRecord]]:
    """The process's real logging setup (as `gpustack start` makes it), with every record kept."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    setup_logging(False)
    root.addHandler(Keep())
    yield records
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def start_engine(content_type: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    engine = subprocess.Popen(
        [sys.executable, "-c", CRASHING_ENGINE, str(port), content_type], stdout=subprocess.PIPE
    )
    assert engine.stdout is not None and engine.stdout.readline().strip() == b"ready"
    return engine, port


@pytest.fixture
async def relay_to_crashing_engine(
    request: pytest.FixtureRequest, collected_logs: list[logging.LogRecord]
) -> AsyncIterator[Relay]:
    engine, engine_port = start_engine(request.param)
    http = httpx.AsyncClient(timeout=10)
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def relay(incoming: Request) -> Response:
        upstream = await http.send(
            http.build_request(
                "POST", f"http://127.0.0.1:{engine_port}/v1/chat/completions", content=await incoming.body()
            ),
            stream=True,
        )
        return stream_back(upstream)

    port = free_port()
    server = make_server(app)
    # The socket listens from bind_socket on: requests wait in its backlog until uvicorn serves them.
    serving = asyncio.create_task(server.serve(sockets=[bind_socket("127.0.0.1", port, "--port")]))
    try:
        yield Relay(f"http://127.0.0.1:{port}", collected_logs)
    finally:
        server.should_exit = True
        await serving
        await http.aclose()
        engine.kill()
        engine.wait()


def assert_one_line_and_no_traceback(records: list[logging.LogRecord]) -> None:
    relay_lines = [r for r in records if r.name == "gpustack.utils.relay"]
    assert len(relay_lines) == 1, [r.getMessage() for r in relay_lines]
    assert relay_lines[0].levelno == logging.WARNING and "broke off after" in relay_lines[0].getMessage()
    assert relay_lines[0].exc_info is None
    tracebacks = [r for r in records if r.exc_info]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]


@pytest.mark.parametrize("relay_to_crashing_engine", ["text/event-stream"], indirect=True)
async def test_a_stream_broken_off_ends_with_an_error_the_openai_client_raises(
    relay_to_crashing_engine: Relay,
) -> None:
    url = relay_to_crashing_engine.url + "/v1"
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
    received = []
    with pytest.raises(openai.APIError) as failure:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    await client.close()
    assert received == ["Hel"]  # what the engine sent before it died still arrived
    assert "the model's engine stopped in the middle of the response" in failure.value.message
    assert_one_line_and_no_traceback(relay_to_crashing_engine.records)


@pytest.mark.parametrize("relay_to_crashing_engine", ["application/json"], indirect=True)
async def test_a_body_broken_off_is_cut_off_not_passed_as_complete(relay_to_crashing_engine: Relay) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(relay_to_crashing_engine.url + "/v1/chat/completions", json={"model": "m"})
    await asyncio.sleep(0.1)  # the server's side of the request finishes after the client has seen the cut
    assert_one_line_and_no_traceback(relay_to_crashing_engine.records)
