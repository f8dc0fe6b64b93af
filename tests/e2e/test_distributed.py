"""End to end: one model across two workers through llama.cpp RPC servers, with real processes.

Two workers each declare a small virtual GPU that cannot hold SmolLM2 alone; the scheduler splits the
layers over both through their RPC servers (one per GPU, as the FAQ describes), the main worker runs
llama-server with --rpc and --tensor-split, and the official openai client gets answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.conftest import require_or_skip, smollm2_path
from tests.e2e.cluster import Cluster, wait_until

pytestmark = pytest.mark.e2e

PASSWORD = "E2e-Admin-Pass"
SMALL_GPU = (
    "resources:\n  gpu_devices:\n    - {name: Virtual 120 MiB, vendor: Test, type: cuda, memory: 120MiB}\n"
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_or_skip(smollm2_path() is not None, "the SmolLM2 test model")
    with Cluster(tmp_path, PASSWORD).running() as cluster:
        for name in ("rpc-a", "rpc-b"):
            worker = cluster.add_worker(name, SMALL_GPU)
            worker.args += ["--system-reserved", '{"ram": 2, "vram": 0}']
            worker.start()
        yield cluster


def test_a_model_too_big_for_any_one_gpu_is_split_across_workers_through_rpc(cluster: Cluster) -> None:
    api = httpx.Client(base_url=cluster.url, timeout=30)
    assert api.post("/auth/login", json={"username": "admin", "password": PASSWORD}).status_code == 200

    def ready_with_rpc(name: str) -> dict | None:
        items = api.get("/v2/workers", params={"name": name}).json()["items"]
        worker = items[0] if items else None
        return worker if worker and worker["state"] == "ready" and worker["status"]["rpc_servers"] else None

    for name in ("rpc-a", "rpc-b"):
        wait_until(lambda n=name: ready_with_rpc(n), 60, f"{name} with its RPC server")
    try:
        created = api.post(
            "/v2/models",
            json={"name": "split", "local_path": smollm2_path(), "backend_parameters": ["--ctx-size=2048"]},
        )
        assert created.status_code == 201, created.text

        def running() -> dict | None:
            items = api.get("/v2/model-instances").json()["items"]
            return items[0] if items and items[0]["state"] == "running" else None

        instance = wait_until(running, 180, "the distributed instance to run")
        assert instance["placement"]["mode"] == "rpc"
        subordinates = {s["worker_name"] for s in instance["subordinate_workers"]}
        assert len(subordinates) >= 1 and subordinates | {instance["worker_name"]} >= {"rpc-a", "rpc-b"}
        command = psutil.Process(instance["pid"]).cmdline()
        endpoints = command[command.index("--rpc") + 1].split(",")
        assert len(endpoints) == 2 and len(command[command.index("--tensor-split") + 1].split(",")) == 2

        # Each lender's status counts what it lends, and the FAQ's RPC server log exists.
        # (a lender learns of the instance through its watch and reports at its next heartbeat)
        for name in ("rpc-a", "rpc-b"):

            def lends(n: str = name) -> bool:
                worker = api.get("/v2/workers", params={"name": n}).json()["items"][0]
                return bool(worker["status"]["gpu_devices"][0]["memory"]["allocated"] > 0)

            wait_until(lends, 30, f"{name} to report the memory it lends")
            assert (cluster.root / name / "log" / "rpc_server" / "gpu-0.log").exists()

        key = api.post("/v2/api-keys", json={"name": "split"}).json()["value"]
        client = openai.OpenAI(base_url=f"{cluster.url}/v1-openai", api_key=key, max_retries=0)
        reply = client.chat.completions.create(
            model="split", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12
        )
        assert reply.choices[0].message.content
    except BaseException:
        print(cluster.logs())
        raise
