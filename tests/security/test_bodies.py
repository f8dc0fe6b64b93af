"""Request bodies an attacker controls: credentials are checked before a body is read, every route has a
size limit (413), and JSON nested too deeply is a 400, never a 500."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from gpustack.config import ConfigError, load_config
from gpustack.server.edge import MANAGEMENT_BODY_LIMIT, format_size
from tests.conftest import free_port
from tests.e2e.cluster import GpustackProcess, wait_until
from tests.security.http_raw import send_head_only
from tests.server.conftest import ADMIN_PASSWORD, RunningServer, login, server_settings, start_server

MiB = 1024**2
NESTED = b"[" * 100_000 + b"]" * 100_000


async def api_key(admin: httpx.AsyncClient) -> str:
    response = await admin.post("/v2/api-keys", json={"name": "bodies"})
    assert response.status_code == 201, response.text
    return str(response.json()["value"])


def assert_management_error(body: dict, status: int) -> None:
    assert body["code"] == status and body["reason"] and body["message"], body


def assert_openai_error(body: dict) -> None:
    error = body["error"]
    assert error["message"] and error["type"], body


# ---- credentials before bodies


@pytest.mark.parametrize("path", ["/v2/models", "/v2/users", "/v2/workers/register", "/v2/model-evaluations"])
async def test_unauthenticated_management_request_is_answered_401_without_waiting_for_its_body(
    server: RunningServer, path: str
) -> None:
    response = await send_head_only(
        server.url, "POST", path, {"Content-Type": "application/json", "Content-Length": "300000000"}
    )
    assert response.status_code == 401
    assert_management_error(response.json(), 401)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1-openai/embeddings"])
async def test_unauthenticated_gateway_request_is_answered_401_without_waiting_for_its_body(
    server: RunningServer, path: str
) -> None:
    response = await send_head_only(
        server.url, "POST", path, {"Content-Type": "application/json", "Content-Length": "300000000"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


async def test_login_body_is_small_even_without_credentials(server: RunningServer) -> None:
    response = await send_head_only(
        server.url, "POST", "/auth/login", {"Content-Type": "application/json", "Content-Length": "10000000"}
    )
    assert response.status_code == 413
    assert_management_error(response.json(), 413)


# ---- size limits


async def test_oversized_management_body_gets_413_before_it_is_sent(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    key = await api_key(admin)
    response = await send_head_only(
        server.url,
        "POST",
        "/v2/models",
        {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Content-Length": str(50 * MiB),
        },
    )
    assert response.status_code == 413
    body = response.json()
    assert_management_error(body, 413)
    assert f"larger than {format_size(MANAGEMENT_BODY_LIMIT)}" in body["message"]


async def test_chunked_management_body_over_the_limit_gets_413(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "m", "local_path": "/m.gguf", "description": "'
        for _ in range(MANAGEMENT_BODY_LIMIT // MiB + 1):
            yield b"x" * MiB
        yield b'"}'

    response = await admin.post("/v2/models", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert_management_error(response.json(), 413)
    assert (await admin.get("/v2/models")).json()["items"] == []


@pytest.mark.parametrize("prefix", ["/v1", "/v1-openai"])
async def test_fifty_megabyte_chat_body_is_refused_before_it_reaches_an_engine(
    server: RunningServer, admin: httpx.AsyncClient, prefix: str
) -> None:
    key = await api_key(admin)
    await admin.post("/v2/models", json={"name": "idle", "local_path": "/nowhere/m.gguf", "replicas": 0})
    prompt = "x" * (50 * 1000 * 1000)
    async with server.client(headers={"Authorization": f"Bearer {key}"}) as client:
        response = await client.post(
            f"{prefix}/chat/completions",
            json={"model": "idle", "messages": [{"role": "user", "content": prompt}]},
        )
    assert response.status_code == 413
    assert_openai_error(response.json())
    assert "--gateway-max-body-size" in response.json()["error"]["message"]


async def test_gateway_body_limit_is_the_configured_flag(tmp_path: Path, clean_env: None) -> None:
    settings = server_settings(
        tmp_path, f"sqlite:///{tmp_path / 'database.db'}", gateway_max_body_size="1MiB"
    )
    instance, stop, task, url = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as admin:
            await login(admin)
            key = await api_key(admin)
        async with httpx.AsyncClient(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}
        ) as client:
            small = await client.post("/v1/embeddings", json={"model": "nope", "input": "x" * (MiB // 2)})
            large = await client.post("/v1/embeddings", json={"model": "nope", "input": "x" * (2 * MiB)})
        assert small.status_code == 404  # within the limit: it reached the routing
        assert large.status_code == 413 and "1 MiB" in large.json()["error"]["message"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@pytest.mark.parametrize("value", ["0", "-1MiB", "lots", "2GiB"])
def test_gateway_body_limit_flag_refuses_nonsense(value: str) -> None:
    with pytest.raises(ConfigError, match="--gateway-max-body-size"):
        load_config({"gateway_max_body_size": value, "data_dir": "/tmp/unused"}, {})


# ---- deep JSON


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions", "/v1-openai/completions", "/v2/model-evaluations", "/v2/models", "/v2/users"],
)
async def test_deeply_nested_json_is_a_400_not_a_500(
    server: RunningServer, admin: httpx.AsyncClient, path: str
) -> None:
    key = await api_key(admin)
    async with server.client(
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    ) as client:
        response = await client.post(path, content=NESTED)
    assert response.status_code == 400, response.text
    body = response.json()
    message = body["error"]["message"] if "error" in body else body["message"]
    assert "nest" in message


# ---- memory of a real server process under an unauthenticated upload


class PeakRss:
    """Samples a process's resident memory in a thread; `peak` is the largest value seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def upload(port: int, path: str, size: int) -> int | None:
    """POST `size` bytes of JSON without credentials; the status answered, or None if none could be read."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    chunk = b"a" * MiB
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head + b'{"name": "')
        sent = 10
        try:
            while sent < size - 2:
                piece = chunk[: size - 2 - sent]
                sock.sendall(piece)
                sent += len(piece)
            sock.sendall(b'"}')
        except OSError:
            pass  # the server answered and closed without reading the rest: what we want
        reader = sock.makefile("rb")
        try:
            status_line = reader.readline()
        except OSError:
            return None
        return int(status_line.split()[1]) if status_line else None


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[GpustackProcess, int]]:
    port = free_port()
    process = GpustackProcess(
        "server",
        tmp_path / "data",
        [
            "--disable-worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--bootstrap-password",
            ADMIN_PASSWORD,
        ],
    )
    process.start()
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
            60,
            f"the server's /healthz\n{process.log_tail()}",
        )
        yield process, port
    finally:
        process.stop()


def test_unauthenticated_300_megabyte_upload_does_not_grow_server_memory(
    server_process: tuple[GpustackProcess, int],
) -> None:
    process, port = server_process
    for _ in range(3):  # warm up the code paths of an unauthenticated request
        assert upload(port, "/v2/models", 1000) == 401
    with PeakRss(process.pid) as rss:
        before = rss.process.memory_info().rss
        status = upload(port, "/v2/models", 300 * 1000 * 1000)
    grown = (rss.peak - before) / MiB
    assert grown < 64, f"the server grew by {grown:.0f} MiB while refusing an unauthenticated upload"
    assert status in (401, None)
    # Still serving, and the credentials check still answers.
    assert upload(port, "/v2/models", 1000) == 401
