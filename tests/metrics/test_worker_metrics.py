"""A worker's metrics port: its GPUs, its engines' processes and their own metrics, and who may read it
(the metrics token, or an administrator's API key that the worker's server vouches for)."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpustack.metrics.engines import EngineProcess
from gpustack.metrics.worker import WorkerMetrics
from gpustack.metrics.worker_app import AdminKeys, MetricsListener
from gpustack.schemas.workers import GPUCoreInfo, GPUDevice, GPUType, MemoryInfo
from tests.conftest import free_port
from tests.server.conftest import RunningServer, login

TOKEN = "worker-metrics-token-0123456789"
RECORDED = (Path(__file__).parent / "fixtures" / "llama_server_metrics.txt").read_bytes()
GiB = 1024**3

GPU = GPUDevice(
    index=0,
    name="NVIDIA GeForce RTX 4090",
    vendor="NVIDIA",
    type=GPUType.CUDA,
    id="w1:cuda:0",
    memory=MemoryInfo(total=24 * GiB, used=6 * GiB),
    core=GPUCoreInfo(total=128, utilization_rate=50.0),
    temperature=61.0,
)


async def _engine_metrics(port: int) -> asyncio.AbstractServer:
    """An HTTP/1.1 listener answering GET /metrics with what llama.cpp's server answered (recorded)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(RECORDED)}\r\n\r\n"
        writer.write(head.encode() + RECORDED)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def engine_process() -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


async def test_gpus_engines_and_their_own_metrics_are_reported(engine_process: subprocess.Popen) -> None:
    port = free_port()
    engines = [
        EngineProcess(1, "chat-1", "chat", engine_process.pid, port),
        EngineProcess(2, "gone-1", "gone", None, None),
    ]
    metrics = WorkerMetrics(lambda: "w1", lambda: [GPU], lambda: engines)
    listener = await _engine_metrics(port)
    try:
        text = (await metrics.render()).decode()
    finally:
        listener.close()
        await metrics.aclose()
    found = _samples(text)
    gpu = {"worker": "w1", "gpu": "w1:cuda:0", "gpu_index": "0", "gpu_name": GPU.name, "gpu_type": "cuda"}
    assert found[("gpustack_gpu_utilization_ratio", frozenset(gpu.items()))] == 0.5
    assert found[("gpustack_gpu_memory_used_bytes", frozenset(gpu.items()))] == 6 * GiB
    assert found[("gpustack_gpu_memory_total_bytes", frozenset(gpu.items()))] == 24 * GiB
    assert found[("gpustack_gpu_temperature_celsius", frozenset(gpu.items()))] == 61
    chat = frozenset({"worker": "w1", "model": "chat", "model_instance": "chat-1"}.items())
    gone = frozenset({"worker": "w1", "model": "gone", "model_instance": "gone-1"}.items())
    assert found[("gpustack_engine_up", chat)] == 1 and found[("gpustack_engine_up", gone)] == 0
    assert found[("gpustack_engine_resident_memory_bytes", chat)] > 1024 * 1024
    assert ("gpustack_engine_cpu_seconds_total", chat) in found
    assert (
        found[("gpustack_engine_metrics_up", chat)] == 1 and found[("gpustack_engine_metrics_up", gone)] == 0
    )
    assert found[("llamacpp:prompt_tokens_total", chat)] == 31  # passed through, with our labels
    assert found[("gpustack_worker_memory_total_bytes", frozenset({"worker": "w1"}.items()))] > 0


async def test_the_metrics_port_takes_the_token_or_an_admin_key_only(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    admin_key = (await admin.post("/v2/api-keys", json={"name": "grafana"})).json()["value"]
    await admin.post("/v2/users", json={"username": "bob", "password": "bob-password"})
    async with server.client() as bob:
        await login(bob, "bob", "bob-password")
        user_key = (await bob.post("/v2/api-keys", json={"name": "bob"})).json()["value"]
    port = free_port()
    metrics = WorkerMetrics(lambda: "w1", lambda: [GPU], lambda: [])
    listener = MetricsListener.start(port, TOKEN, metrics, AdminKeys(server.url))
    assert listener is not None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as prometheus:
            for credential, status in (
                (TOKEN, 200),
                (admin_key, 200),
                (user_key, 403),
                ("x", 403),
                (None, 401),
            ):
                headers = {"Authorization": f"Bearer {credential}"} if credential else {}
                for _ in range(100):
                    try:
                        response = await prometheus.get("/metrics", headers=headers)
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)  # the listener is starting
                assert response.status_code == status, (credential, response.text)
                if status == 200:
                    assert "gpustack_gpu_utilization_ratio" in response.text
                else:
                    assert "metrics token" in response.json()["message"]
    finally:
        await listener.stop()


async def test_a_metrics_port_in_use_costs_the_metrics_not_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = WorkerMetrics(lambda: "w1", lambda: [], lambda: [])
        keys = AdminKeys("http://127.0.0.1:9")
        with caplog.at_level(logging.ERROR, logger="gpustack.metrics.worker_app"):
            assert MetricsListener.start(port, TOKEN, metrics, keys) is None
        await metrics.aclose()
        await keys.aclose()
    assert f"--worker-metrics-port {port}" in caplog.text and "--disable-metrics" in caplog.text
