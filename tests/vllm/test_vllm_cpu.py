"""vLLM's CPU build, started by hand as the vllm backend starts it, serves the test models: chat with
SmolLM2's real weights, and sentence embeddings with all-MiniLM-L6-v2. Pins what the backend relies on:
the module entry point, /health as readiness, the served model name, and the environment it needs."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

START_TIMEOUT = 300.0


def vllm_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VLLM_")}
    env.update(
        VLLM_CPU_KVCACHE_SPACE="1",  # GiB of KV cache; the default (4) is more than tests need
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
    )
    return env


@contextmanager
def vllm_server(python: Path, model: Path, log: Path, *args: str) -> Iterator[str]:
    port = free_port()
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--served-model-name", "m", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", *args,
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not ready after {START_TIMEOUT:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield base
    finally:
        # vLLM's API server takes its engine processes down on SIGTERM; the group kill is the backstop.
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_vllm_cpu_serves_chat_with_smollm2_safetensors(
    vllm_env_python: Path, smollm2_safetensors: Path, tmp_path: Path
) -> None:
    log = tmp_path / "vllm.log"
    # float32: vLLM 0.32's CPU build in bfloat16 answers this question wrongly on some CPUs ("L'Étoile, la
    # Marseillaise, ..."), where transformers in bfloat16 and vLLM in float32 say Paris.
    args = ("--max-model-len", "2048", "--dtype", "float32")
    with vllm_server(vllm_env_python, smollm2_safetensors, log, *args) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
        assert [model.id for model in client.models.list().data] == ["m"]
        reply = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=20,
            temperature=0,
        )
        assert "Paris" in (reply.choices[0].message.content or "")
        assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_vllm_cpu_serves_normalized_embeddings_with_minilm(
    vllm_env_python: Path, minilm_embedding: Path, tmp_path: Path
) -> None:
    with vllm_server(vllm_env_python, minilm_embedding, tmp_path / "vllm.log") as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
        result = client.embeddings.create(
            model="m", input=["The cat sits on the mat.", "A cat is sitting on a mat.", "Stock prices fell."]
        )
        vectors = [item.embedding for item in result.data]
        assert [len(vector) for vector in vectors] == [384, 384, 384]
        assert all(abs(math.hypot(*vector) - 1.0) < 1e-3 for vector in vectors)  # mean pooling, normalized

        def cosine(a: list[float], b: list[float]) -> float:
            return sum(x * y for x, y in zip(a, b, strict=True))

        assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
