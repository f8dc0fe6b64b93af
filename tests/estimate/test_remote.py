"""Remote models through a loopback hub that speaks the Hugging Face and ModelScope HTTP APIs."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from gguf import GGUFWriter

from gpustack.estimate.gguf import read_gguf_header
from gpustack.estimate.remote import (
    FetchStats,
    RemoteModelError,
    read_remote_gguf_header,
    read_remote_model,
)
from gpustack.estimate.safetensors import read_local_model
from gpustack.estimate.vllm import VllmOptions, estimate_safetensors_report, estimate_vllm
from tests.estimate.fixtures.hub import HubState, hub_server
from tests.estimate.fixtures.safetensors_models import llama_config, llama_tensors, tiny_llama, write_model


@pytest.fixture
def hub():
    state = HubState()
    with hub_server(state) as endpoint:
        yield state, endpoint


def llama3_8b(folder: Path, pad_to: int = 0) -> int:
    """Llama-3-8B shapes in 4 sparse shards; returns the bytes on the (virtual) disk."""
    config = llama_config(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
    )
    files = write_model(str(folder), config, llama_tensors(32, 4096, 32, 8, 128, 14336, 128256), 4, pad_to)
    return sum((folder / f).stat().st_size for f in files)


def test_huggingface_reads_only_headers(hub, tmp_path, monkeypatch):
    state, endpoint = hub
    size = llama3_8b(tmp_path)
    state.repos["meta-llama/Llama-3-8B"] = str(tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    stats = FetchStats()
    remote = read_remote_model("meta-llama/Llama-3-8B", "huggingface", stats=stats)
    local = read_local_model(str(tmp_path))
    assert remote.tensors == local.tensors and remote.config == local.config
    assert remote.source == "huggingface:meta-llama/Llama-3-8B@main"
    # file list + config.json + index + one range per shard (each header < 64 KiB)
    assert stats.requests == 1 + 1 + 1 + 4
    assert size > 16_000_000_000 and state.bytes_served < 4 * 64 * 1024 + 64 * 1024
    assert all("/resolve/main/" in r or r.startswith(("/api/", "/cdn/")) for r in state.requests)
    estimate = estimate_vllm(remote, VllmOptions())
    assert estimate.weights_bytes == 16_060_522_496


def test_long_headers_take_a_second_range(hub, tmp_path):
    state, endpoint = hub
    llama3_8b(tmp_path, pad_to=100_000)
    state.repos["org/padded"] = str(tmp_path)
    stats = FetchStats()
    remote = read_remote_model("org/padded", "huggingface", endpoint=endpoint, stats=stats)
    assert len(remote.tensors) == 291
    assert stats.requests == 3 + 4 * 2


def test_modelscope_api_shape_and_default_branch(hub, tmp_path, monkeypatch):
    state, endpoint = hub
    tiny_llama(str(tmp_path), shards=2)
    state.repos["qwen/tiny"] = str(tmp_path)
    monkeypatch.setenv("MODELSCOPE_DOMAIN", endpoint)
    remote = read_remote_model("qwen/tiny", "modelscope")
    assert remote.source == "modelscope:qwen/tiny@master"
    assert remote.total_bytes == read_local_model(str(tmp_path)).total_bytes
    assert any(r.startswith("/api/v1/models/qwen/tiny/repo/files?Revision=master") for r in state.requests)
    assert any("FilePath=model-00001-of-00002.safetensors" in r for r in state.requests)


def test_missing_repository_says_what_to_do(hub):
    _, endpoint = hub
    with pytest.raises(
        RemoteModelError, match="no such repository or file: huggingface nobody/nothing"
    ) as err:
        read_remote_model("nobody/nothing", "huggingface", endpoint=endpoint)
    assert "private repos need a token" in str(err.value)
    with pytest.raises(RemoteModelError, match="no such repository"):
        read_remote_model("nobody/nothing", "modelscope", endpoint=endpoint)


def test_private_repository_needs_the_token(hub, tmp_path, monkeypatch):
    state, endpoint = hub
    tiny_llama(str(tmp_path))
    state.repos["corp/secret"] = str(tmp_path)
    state.private["corp/secret"] = "hf_abc"
    with pytest.raises(
        RemoteModelError, match=r"access denied to huggingface corp/secret .*HTTP 401.*HF_TOKEN"
    ):
        read_remote_model("corp/secret", "huggingface", endpoint=endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    assert read_remote_model("corp/secret", "huggingface", endpoint=endpoint).total_bytes == 5_485_056


def test_server_that_ignores_range_is_refused(hub, tmp_path):
    state, endpoint = hub
    tiny_llama(str(tmp_path))
    state.repos["org/norange"] = str(tmp_path)
    state.ignore_range = True
    with pytest.raises(RemoteModelError, match="ignored the Range header .* refusing to download it"):
        read_remote_model("org/norange", "huggingface", endpoint=endpoint)


def test_corrupt_remote_header_names_the_file(hub, tmp_path):
    state, endpoint = hub
    tiny_llama(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    state.repos["org/broken"] = str(tmp_path)
    with pytest.raises(RemoteModelError, match="org/broken/model.safetensors .*not a safetensors file"):
        read_remote_model("org/broken", "huggingface", endpoint=endpoint)


def test_unreachable_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteModelError, match="cannot reach http://127.0.0.1"):
        read_remote_model("a/b", "huggingface", endpoint=f"http://127.0.0.1:{port}")


def test_bad_repository_id():
    with pytest.raises(RemoteModelError, match="not a repository id"):
        read_remote_model("just-a-name", "huggingface", endpoint="http://127.0.0.1:9")


def test_local_path_makes_no_network_call(tmp_path, monkeypatch):
    tiny_llama(str(tmp_path))

    def refuse(*args, **kwargs):
        raise AssertionError("network used for a local model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(httpx.Client, "send", refuse)
    assert estimate_safetensors_report(str(tmp_path), [])["weights_bytes"] == 5_485_056


def test_gguf_header_over_ranges(hub, tmp_path):
    state, endpoint = hub
    path = tmp_path / "model-Q8_0.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_token_list([f"token-{i}" for i in range(150_000)])  # about 2.5 MB of vocabulary
    writer.add_tensor("token_embd.weight", np.zeros((1024, 1024), dtype=np.float32))  # 4 MiB of data
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    state.repos["org/gguf"] = str(tmp_path)
    stats = FetchStats()
    header = read_remote_gguf_header("org/gguf", path.name, endpoint=endpoint, stats=stats)
    local = read_gguf_header(path)
    assert header.tensors == local.tensors and header.metadata == local.metadata
    assert header.file_size == path.stat().st_size
    assert stats.requests <= 4 and stats.bytes < header.data_offset + 2 * (1 << 20)
