"""The server's /metrics: who may read it, what it says about the cluster, the gateway and the scheduler,
and that --disable-metrics turns it off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import RunningServer, login, server_settings, start_server
from tests.server.test_models_api import wait_for

METRICS_TOKEN = "prometheus-reads-this-0123456789"


@pytest.fixture
async def metered(tmp_path: Path, database_url: str, clean_env: None) -> AsyncIterator[RunningServer]:
    settings = server_settings(tmp_path, database_url, metrics_token=METRICS_TOKEN)
    instance, stop, task, url = await start_server(settings)
    assert instance.ctx is not None
    yield RunningServer(url, instance.config, instance.ctx)
    stop.set()
    await asyncio.wait_for(task, 60)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(server: RunningServer) -> str:
    async with server.client(headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as prometheus:
        response = await prometheus.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_metrics_answer_the_metrics_token_and_administrators_only(metered: RunningServer) -> None:
    async with metered.client() as admin:
        await login(admin)
        key = (await admin.post("/v2/api-keys", json={"name": "grafana"})).json()["value"]
        assert (await admin.get("/metrics")).status_code == 200
        await admin.post("/v2/users", json={"username": "bob", "password": "bob-password"})
    async with metered.client() as bob:
        await login(bob, "bob", "bob-password")
        user_key = (await bob.post("/v2/api-keys", json={"name": "bob"})).json()["value"]
    for credential, status in (
        (METRICS_TOKEN, 200), (key, 200), (user_key, 403), ("wrong-token", 401), (None, 401),
    ):  # fmt: skip
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        async with metered.client(headers=headers) as client:
            response = await client.get("/metrics")
        assert response.status_code == status, (credential, response.text)
        if status == 401:
            assert "metrics token" in response.json()["message"]
    assert "gpustack_build_info" in await scrape(metered)


async def test_an_unknown_model_is_counted_without_a_series_named_after_it(metered: RunningServer) -> None:
    async with metered.client() as admin:
        await login(admin)
        key = (await admin.post("/v2/api-keys", json={"name": "k"})).json()["value"]
    async with metered.client(headers={"Authorization": f"Bearer {key}"}) as user:
        for name in ("no-such-model-1", "no-such-model-2"):
            response = await user.post("/v1/chat/completions", json={"model": name, "messages": []})
            assert response.status_code == 404
    text = await scrape(metered)
    assert "no-such-model" not in text
    found = samples(text)
    key_labels = frozenset({"model": "", "model_instance": "", "reason": "model_not_found"}.items())
    assert found[("gpustack_gateway_errors_total", key_labels)] == 2


async def test_a_model_without_a_running_instance_is_counted_per_model(metered: RunningServer) -> None:
    async with metered.client() as admin:
        await login(admin)
        await admin.post("/v2/models", json={"name": "idle", "local_path": "/nowhere/m.gguf", "replicas": 0})
        key = (await admin.post("/v2/api-keys", json={"name": "k"})).json()["value"]
    async with metered.client(headers={"Authorization": f"Bearer {key}"}) as user:

        async def refused() -> bool:
            response = await user.post("/v1/completions", json={"model": "idle", "prompt": "x"})
            return response.status_code == 503  # once the routing table knows the model

        await wait_for(refused)
    found = samples(await scrape(metered))
    labels = frozenset({"model": "idle", "model_instance": "", "route": "completions", "code": "503"}.items())
    assert found[("gpustack_gateway_requests_total", labels)] >= 1


async def test_cluster_state_and_scheduling_decisions_are_exposed(metered: RunningServer) -> None:
    async with metered.client() as admin:
        await login(admin)
        # No worker can hold it (and its file does not exist): it stays pending, with a decision each round.
        response = await admin.post("/v2/models", json={"name": "big", "local_path": "/nowhere/m.gguf"})
        assert response.status_code == 201, response.text

    async def decided() -> dict | None:
        found = samples(await scrape(metered))
        outcomes = {
            dict(labels)["outcome"]: value
            for (name, labels), value in found.items()
            if name == "gpustack_scheduler_decisions_total"
        }
        return found if sum(outcomes.values()) >= 1 else None

    found = await wait_for(decided)
    assert found[("gpustack_model_instances", frozenset({"model": "big", "state": "pending"}.items()))] == 1
    assert found[("gpustack_model_instances", frozenset({"model": "big", "state": "running"}.items()))] == 0
    assert found[("gpustack_model_replicas", frozenset({"model": "big"}.items()))] == 1
    assert found[("gpustack_workers", frozenset({"state": "ready"}.items()))] == 0
    assert found[("gpustack_scheduler_round_duration_seconds_count", frozenset())] >= 1
    # The work behind it: statements by operation, and the changes the event bus carried.
    assert (
        found[("gpustack_db_query_duration_seconds_count", frozenset({"operation": "insert"}.items()))] >= 1
    )
    assert found[("gpustack_event_bus_events_total", frozenset({"topic": "models"}.items()))] >= 1
    assert found[("gpustack_event_bus_subscribers", frozenset())] >= 1


async def test_disable_metrics_turns_the_route_off(
    tmp_path: Path, database_url: str, clean_env: None
) -> None:
    instance, stop, task, url = await start_server(
        server_settings(tmp_path, database_url, disable_metrics=True)
    )
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            await login(client)
            response = await client.get("/metrics")
        assert response.status_code == 404
        assert "--disable-metrics" in response.json()["message"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
