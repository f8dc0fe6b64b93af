"""End to end: a worker whose vendor tool fails stays registered, goes not_ready with the tool's own words,
and becomes ready with its NPUs once the tool works again (the FAQ's `npu-smi` -8020 case)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.cluster import Cluster, wait_until
from tests.worker.detect.fakes import fake_tool

pytestmark = pytest.mark.e2e

PASSWORD = "E2e-Admin-Pass"
DEVICE_USED = "dcmi model initialized failed, because the device is used. ret is -8020"
ASCEND_910B = Path(__file__).parents[1] / "worker" / "detect" / "fixtures" / "ascend" / "910b3-x4-container"


def recorded_910b() -> dict[str, tuple[str, int]]:
    """`npu-smi` answers recorded on a container with four 910B3 (see the fixture folder's README)."""
    return {path.stem.replace("_", " "): (path.read_text(), 0) for path in ASCEND_910B.glob("*.txt")}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path, PASSWORD).running("--disable-worker") as cluster:
        yield cluster


def test_a_busy_npu_makes_the_worker_not_ready_with_npu_smis_words_until_it_is_free(
    cluster: Cluster, tmp_path: Path
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    fake_tool(tools, "npu-smi", {"info": (DEVICE_USED + "\n", 0)})
    worker = cluster.add_worker("npu-node", env={"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"})
    worker.start()
    api = httpx.Client(base_url=cluster.url, timeout=30)
    assert api.post("/auth/login", json={"username": "admin", "password": PASSWORD}).status_code == 200

    def worker_state() -> dict | None:
        items = api.get("/v2/workers", params={"name": "npu-node"}).json()["items"]
        return items[0] if items else None

    try:
        busy = wait_until(lambda: (w := worker_state()) and w["state"] == "not_ready" and w, 60, "not_ready")
        assert DEVICE_USED in busy["state_message"]
        assert busy["state_message"].startswith("GPU detection failed: Huawei:")

        # Another container lets go of the NPUs: the worker notices on its own, without a restart.
        fake_tool(tools, "npu-smi", recorded_910b())
        ready = wait_until(lambda: (w := worker_state()) and w["state"] == "ready" and w, 60, "ready")
        gpus = ready["status"]["gpu_devices"]
        assert [g["id"] for g in gpus] == [f"npu-node:npu:{i}" for i in range(4)]
        assert {g["type"] for g in gpus} == {"npu"} and all(g["memory"]["total"] > 0 for g in gpus)
    except BaseException:
        print(cluster.logs())
        raise
