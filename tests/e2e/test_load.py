"""A bounded flood (about a minute) against a real cluster whose worker runs a stub engine: waves of slow
streams at once plus quick requests in a loop, more than the model's in-flight limit allows. Whatever the
load, the gateway serves or refuses cleanly: no 500, every refusal a 429 or 503 at once with Retry-After
in OpenAI's error shape, every stream it accepts finishes; the worker stays ready throughout and the
engine is never restarted. Behaviour only: how fast is bench/spike.py's business."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.api import PASSWORD, Api
from tests.e2e.cluster import Cluster, wait_until

pytestmark = pytest.mark.e2e

STUB = Path(__file__).resolve().parents[1] / "fixtures" / "stub_engine.py"
STREAMS = 400  # at once, each 10 chunks over about 5 s
QUICK_CLIENTS = 16  # in a loop meanwhile
MODEL_LIMIT = 360  # in flight for the model: each wave goes past it, so some requests are refused
FLOOD_SECONDS = 40


def refusal(response: httpx.Response) -> str:
    """How a non-200 answer is counted: its status, marked when it is not a clean refusal."""
    status = str(response.status_code)
    if response.status_code not in (429, 503):
        return status
    try:
        error = response.json()["error"]
        clean = bool(error["message"]) and "type" in error and response.headers.get("retry-after")
    except (ValueError, KeyError, TypeError):
        clean = False
    return status if clean else f"{status} unclean"


async def stream(http: httpx.AsyncClient, answers: Counter[str]) -> None:
    body = {
        "model": "stub",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 10,
    }
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                answers[refusal(response)] += 1
                return
            text = "".join([chunk async for chunk in response.aiter_text()])
        answers["200" if text.rstrip().endswith("data: [DONE]") else "200 cut short"] += 1
    except httpx.HTTPError as exc:
        answers[type(exc).__name__] += 1


async def quick(http: httpx.AsyncClient, answers: Counter[str], until: float) -> None:
    body = {"model": "stub", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    while time.monotonic() < until:
        try:
            response = await http.post("/v1/chat/completions", json=body)
            answers["200" if response.status_code == 200 else refusal(response)] += 1
        except httpx.HTTPError as exc:
            answers[type(exc).__name__] += 1


async def flood(url: str, key: str) -> tuple[Counter[str], Counter[str]]:
    limits = httpx.Limits(max_connections=STREAMS + QUICK_CLIENTS + 10, max_keepalive_connections=100)
    headers = {"Authorization": f"Bearer {key}"}
    streams: Counter[str] = Counter()
    quicks: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as http:
        until = time.monotonic() + FLOOD_SECONDS
        quick_tasks = [asyncio.create_task(quick(http, quicks, until)) for _ in range(QUICK_CLIENTS)]
        while time.monotonic() < until - 10:  # waves of streams, the last one finishing in time
            await asyncio.gather(*(stream(http, streams) for _ in range(STREAMS)))
        await asyncio.gather(*quick_tasks)
    return streams, quicks


def test_a_flood_is_served_or_refused_cleanly_and_the_control_plane_holds(tmp_path: Path) -> None:
    # The cluster's heartbeats come every second and a worker is given up after 5 s (tests/e2e/cluster.py):
    # a control plane starved by the flood would show within the run.
    with Cluster(tmp_path, PASSWORD).running("--gateway-model-max-in-flight", str(MODEL_LIMIT)) as cluster:
        api = Api(cluster.url)
        wait_until(lambda: api.http.get("/v2/workers").json()["items"], 30, "the embedded worker")
        command = f"{sys.executable} {STUB} --host {{host}} --port {{port}} --chunk-interval-ms 500"
        api.deploy({"name": "stub", "backend": "custom", "run_command": command})
        before = wait_until(lambda: api.in_state("stub", "running"), 60, "the stub engine to run")
        key = api.http.post("/v2/api-keys", json={"name": "flood"}).json()["value"]

        worker_states: list[str] = []

        async def run() -> tuple[Counter[str], Counter[str]]:
            done = asyncio.Event()

            async def watch() -> None:  # the control plane, as an operator would look at it meanwhile
                async with httpx.AsyncClient(
                    base_url=cluster.url, cookies=api.http.cookies, timeout=30
                ) as admin:
                    while not done.is_set():
                        workers = (await admin.get("/v2/workers")).json()["items"]
                        worker_states.extend(w["state"] for w in workers)
                        await asyncio.sleep(1)

            watcher = asyncio.create_task(watch())
            try:
                return await flood(cluster.url, key)
            finally:
                done.set()
                await watcher

        streams, quicks = asyncio.run(run())
        after = api.instance_of("stub")
        assert before is not None and after is not None
        print(f"streams: {dict(streams)}; quick requests: {dict(quicks)}; workers: {Counter(worker_states)}")
        # Served (200, streams to their end) or refused cleanly at the limit (429/503): nothing else.
        assert set(streams) | set(quicks) <= {"200", "429", "503"}, (streams, quicks)
        assert streams["200"] >= STREAMS and quicks["200"] > 0
        assert streams["429"] > 0  # the limit was reached, and answered as it should be
        assert set(worker_states) == {"ready"}
        assert (after["state"], after["pid"], after["restart_count"]) == (
            "running",
            before["pid"],
            before["restart_count"],
        )
