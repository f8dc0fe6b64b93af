"""End to end with vLLM's CPU build, through real gpustack processes and the official openai client:

- SmolLM2-135M (safetensors, in float32) deployed with backend vllm through POST /v2/models answers chat
  through the gateway, on a worker without GPUs, claiming the RAM it takes, with the model's own parameters
  and variables winning;
- all-MiniLM-L6-v2, recognised as an embedding model from its config.json, answers /v1/embeddings;
- the engine killed: the instance shows its exit and last lines, nothing of it is left, and it restarts;
- across two workers with Ray: two gpustack workers declaring one virtual GPU each get the placement,
  gpustack forms the Ray cluster (both nodes in `ray status`), starts vLLM with the Ray executor, and
  tears the cluster down with the instance. vLLM's CPU build then refuses Ray, and the instance says so
  in vLLM's words and gpustack's.

vLLM comes from a managed environment the worker's code installed from the offline wheel cache, kept
between runs (tests/fixtures/vllm_backends.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import openai
import psutil
import pytest

from gpustack.worker.ray import PORTS_PER_NODE
from gpustack.worker.ray_cluster import cluster_token
from tests.conftest import free_port_range, require_or_skip
from tests.e2e.api import PASSWORD, Api, ready_api
from tests.e2e.cluster import Cluster, wait_until
from tests.fixtures.vllm_backends import backends_dir, link_backends, offline_pip_env, wheel_cache

pytestmark = pytest.mark.e2e

START = 420.0  # two vLLM engines loading at once on two cores
VIRTUAL_GPU = (
    "resources:\n  gpu_devices:\n    - {name: Virtual 24 GiB, vendor: Test, type: cuda, memory: 24GiB}\n"
)


@pytest.fixture(scope="module")
def backends() -> tuple[Path, dict[str, str]]:
    cache = wheel_cache()
    require_or_skip(cache is not None, "vLLM's wheel cache (scripts/install-vllm.sh)")
    assert cache is not None
    return backends_dir(cache), offline_pip_env(cache)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, backends: tuple[Path, dict[str, str]]
) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("vllm"))
    folder, pip_env = backends
    with pytest.MonkeyPatch.context() as patch:
        for key, value in pip_env.items():
            patch.setenv(key, value)
        cluster = Cluster(root, PASSWORD)
        link_backends(cluster.server.data_dir, folder)
        with cluster.running() as running:
            yield running


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Api:
    return ready_api(cluster)


@pytest.fixture(scope="module")
def deployed(api: Api, smollm2_safetensors: Path, minilm_embedding: Path) -> dict[str, dict]:
    """SmolLM2 and MiniLM deployed together (they load at the same time), both running. SmolLM2 runs in
    float32, a user's parameter: vLLM 0.32's CPU build in bfloat16 answers this model's question with
    French-sounding nonsense (measured here, offline too), where transformers in bfloat16 and vLLM in
    float32 both say Paris."""
    api.deploy(
        {"name": "smol", "backend": "vllm", "local_path": str(smollm2_safetensors),
         "backend_parameters": ["--dtype", "float32"], "env": {"VLLM_LOGGING_LEVEL": "DEBUG"}}
    )  # fmt: skip
    api.deploy({"name": "minilm", "backend": "vllm", "local_path": str(minilm_embedding)})
    return {
        name: wait_until(lambda n=name: api.in_state(n, "running"), START, f"{name} to run", interval=1)
        for name in ("smol", "minilm")
    }


def test_vllm_serves_chat_through_the_gateway_on_a_worker_without_gpus(
    cluster: Cluster, api: Api, deployed: dict[str, dict]
) -> None:
    instance = deployed["smol"]
    assert instance["placement"]["mode"] == "cpu" and instance["gpu_indexes"] == []
    claim = instance["computed_resource_claim"]
    # The claim follows the user's --dtype: float32 weights (3.73 GiB; 3.33 GiB in bfloat16).
    assert claim["vram"] == {} and 3.5 * 1024**3 < claim["ram"] < 4 * 1024**3
    engine = psutil.Process(instance["pid"])
    argv = engine.cmdline()
    assert argv.count("--dtype") == 1 and argv[argv.index("--dtype") + 1] == "float32"
    assert argv[argv.index("--served-model-name") + 1] == "smol" and "--enforce-eager" in argv
    assert "--gpu-memory-utilization" not in argv
    environment = engine.environ()
    assert environment["VLLM_CPU_KVCACHE_SPACE"] == "1" and environment["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert environment["CUDA_VISIBLE_DEVICES"] == "" and environment["VLLM_API_KEY"]
    # The engine answers only callers with the instance's secret, which the gateway presents.
    assert httpx.get(f"http://127.0.0.1:{instance['port']}/v1/models", timeout=10).status_code == 401

    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=api.key("vllm-chat"), max_retries=0)
    reply = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=20,
        temperature=0,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    log = (cluster.root / "server" / "log" / "serve" / f"{instance['id']}.log").read_text()
    assert "DEBUG" in log  # the model's VLLM_LOGGING_LEVEL reached vLLM


def test_vllm_serves_an_embedding_model_it_recognises_by_its_config(
    cluster: Cluster, api: Api, deployed: dict[str, dict]
) -> None:
    instance = deployed["minilm"]
    assert instance["computed_resource_claim"]["ram"] < 2.5 * 1024**3  # an encoder: no KV cache
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=api.key("vllm-embed"), max_retries=0)
    result = client.embeddings.create(
        model="minilm", input=["The cat sits on the mat.", "A cat is sitting on a mat.", "Stock prices fell."]
    )
    vectors = [item.embedding for item in result.data]
    assert [len(vector) for vector in vectors] == [384, 384, 384]

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3


def test_a_killed_vllm_shows_its_exit_leaves_nothing_behind_and_restarts(
    cluster: Cluster, api: Api, deployed: dict[str, dict]
) -> None:
    instance = wait_until(lambda: api.in_state("minilm", "running"), START, "minilm to run")
    engine = psutil.Process(instance["pid"])
    children = engine.children(recursive=True)  # vLLM's engine core and worker
    assert children
    os.kill(instance["pid"], signal.SIGKILL)

    def failed() -> dict | None:
        current = api.http.get(f"/v2/model-instances/{instance['id']}").json()
        return current if current["state"] == "error" or current["restart_count"] > 0 else None

    seen = wait_until(failed, 60, "the instance to report the engine's exit")
    if seen["state"] == "error":
        assert "the engine exited with code -9. Last lines of" in seen["state_message"]
    # Killed, vLLM's API server cannot stop its engine processes: the worker does, with their memory.
    wait_until(lambda: not any(c.is_running() and c.status() != "zombie" for c in children), 30, "orphans")
    back = wait_until(
        lambda: (i := api.in_state("minilm", "running")) and i["pid"] != instance["pid"] and i,
        START,
        "the restart",
        interval=1,
    )
    assert back["restart_count"] >= 1


# ---- across workers, through Ray


def ray_status(python: Path, address: str, token: str) -> str:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    result = subprocess.run(
        [str(python), "-m", "ray.scripts.scripts", "status", f"--address={address}"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    return result.stdout + result.stderr


def active_nodes(status: str) -> int:
    if "Active:" not in status:
        return 0
    return status.split("Active:")[1].split("Pending:")[0].count("node_")


def ray_processes(base_port: int) -> list[psutil.Process]:
    """Processes of the Ray node whose ports start at `base_port` (its session folder names the port)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if f"gst-ray-{os.getuid()}-{base_port}" in command:
            found.append(process)
    return found


class RayCluster(NamedTuple):
    cluster: Cluster
    ray_ports: dict[str, int]  # worker name -> the first port of its --ray-port-range


@pytest.fixture
def ray_cluster(
    tmp_path: Path, backends: tuple[Path, dict[str, str]], tiny_llama_safetensors: Path
) -> Iterator[RayCluster]:
    folder, pip_env = backends
    with pytest.MonkeyPatch.context() as patch:
        for key, value in pip_env.items():
            patch.setenv(key, value)
        cluster = Cluster(tmp_path, PASSWORD)
        link_backends(cluster.server.data_dir, folder)
        with cluster.running("--enable-ray") as running:
            ports: dict[str, int] = {}
            for name in ("ray-a", "ray-b"):
                low, _ = free_port_range(2 * PORTS_PER_NODE)  # a head slot and a worker-node slot
                ports[name] = low
                worker = running.add_worker(name, VIRTUAL_GPU)
                link_backends(worker.data_dir, folder)
                worker.args += ["--ray-port-range", f"{low}-{low + 2 * PORTS_PER_NODE - 1}"]
                worker.start()
            yield RayCluster(running, ports)


def test_vllm_across_two_workers_forms_a_ray_cluster_runs_the_ray_executor_and_tears_it_down(
    ray_cluster: RayCluster, tiny_llama_safetensors: Path, vllm_env_python: Path
) -> None:
    cluster, ray_ports = ray_cluster
    api = Api(cluster.url)
    for name in ("ray-a", "ray-b"):
        wait_until(
            lambda n=name: [w for w in api.http.get("/v2/workers", params={"name": n}).json()["items"]
                            if w["state"] == "ready" and w["status"]["gpu_devices"]],
            60, f"{name} with its virtual GPU",
        )  # fmt: skip
    api.deploy(
        {"name": "across", "backend": "vllm", "local_path": str(tiny_llama_safetensors),
         "backend_parameters": ["--tensor-parallel-size", "2"], "restart_on_error": False}
    )  # fmt: skip

    def started() -> dict | None:
        instance = api.in_state("across", "starting", "error")
        return instance if instance and (instance["pid"] or instance["state"] == "error") else None

    starting = wait_until(started, 300, "vLLM to be started on the formed cluster", interval=0.2)
    assert starting["state"] == "starting", starting["state_message"]
    layout = starting["placement"]["layout"]
    assert starting["placement"]["mode"] == "multi-worker" and layout["workers"] == 2
    main, other = starting["worker_name"], starting["subordinate_workers"][0]["worker_name"]
    assert {main, other} == {"ray-a", "ray-b"}
    head = f"127.0.0.1:{layout['ray_head_port']}"
    with_env = psutil.Process(starting["pid"]).environ()  # read while it lives: it fails within seconds

    failed = wait_until(lambda: api.in_state("across", "error"), 300, "vLLM to refuse Ray on the CPU")
    message = failed["state_message"]
    assert "current platform cpu does not support ray" in message  # vLLM's own words
    assert "vLLM runs across several workers only on GPUs" in message  # and gpustack's

    log = (cluster.root / main / "log" / "serve" / f"{failed['id']}.log").read_text()
    started = next(line for line in log.splitlines() if "gpustack starts:" in line)
    command = started.split("gpustack starts: ", 1)[1].split()
    assert command[1:4] == ["-m", "vllm.entrypoints.openai.api_server", "--model"]
    assert command[command.index("--served-model-name") + 1] == "across"
    assert (
        command[command.index("--tensor-parallel-size") + 1] == "2"
        and command.count("--tensor-parallel-size") == 1
    )
    assert command[command.index("--distributed-executor-backend") + 1] == "ray"
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.9"
    assert with_env["RAY_ADDRESS"] == head and with_env["VLLM_HOST_IP"] == "127.0.0.1"
    assert with_env["RAY_AUTH_MODE"] == "token" and with_env["CUDA_VISIBLE_DEVICES"] == "0"

    # The cluster outlives the engine's failure (a restart reuses it): both nodes, each with its GPU.
    secret = (cluster.root / "server" / "token").read_text().strip()
    token = cluster_token(secret, failed["id"])
    status = wait_until(
        lambda: (s := ray_status(vllm_env_python, head, token)) and active_nodes(s) == 2 and s,
        60, "both nodes in ray status", interval=1,
    )  # fmt: skip
    assert "2.0 GPU" in status
    assert "Ray runtime started" in (cluster.root / main / "log" / "ray-head.log").read_text()
    assert "Ray runtime started" in (cluster.root / other / "log" / "ray-worker.log").read_text()

    # Deleting the model tears the cluster down on both workers.
    model_id = failed["model_id"]
    assert api.http.delete(f"/v2/models/{model_id}").status_code in (200, 204)
    node = ray_ports[other] + PORTS_PER_NODE  # the subordinate's worker-node slot
    assert ray_processes(layout["ray_head_port"]) and ray_processes(node)
    wait_until(lambda: not ray_processes(layout["ray_head_port"]), 90, "the Ray head to stop", interval=1)
    wait_until(lambda: not ray_processes(node), 90, "the Ray worker node to stop", interval=1)
    assert active_nodes(ray_status(vllm_env_python, head, token)) == 0
