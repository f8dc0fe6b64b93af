"""Model headers from the hubs by range requests, through the sources, against a loopback stand-in that
speaks the Hugging Face and ModelScope HTTP APIs: no weights are downloaded for an estimate."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from gguf import GGUFWriter

from gpustack.estimate.gguf import read_gguf_header
from gpustack.estimate.safetensors import read_local_model
from gpustack.estimate.vllm import VllmOptions, estimate_safetensors_report, estimate_vllm
from gpustack.schemas.models import ModelSpec
from gpustack.sources.base import SourceError, SourceSettings
from gpustack.sources.registry import source_of
from tests.conftest import free_port
from tests.estimate.fixtures.safetensors_models import llama_config, llama_tensors, tiny_llama, write_model
from tests.fixtures.hubs import HubState, hub_server


@pytest.fixture
def hub():
    state = HubState()
    with hub_server(state) as endpoint:
        yield state, endpoint


def _reader(
    endpoint: str, source: str = "huggingface", repo: str = "", filename: str | None = None, **env: str
):
    settings = SourceSettings.of(None, {"HF_ENDPOINT": endpoint, "MODELSCOPE_DOMAIN": endpoint, **env})
    fields = (
        {"huggingface_repo_id": repo, "huggingface_filename": filename}
        if source == "huggingface"
        else {"model_scope_model_id": repo, "model_scope_file_path": filename}
    )
    spec = ModelSpec.model_validate({"source": source, **fields})
    return source_of(source).reader(spec, settings)


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


def test_huggingface_reads_only_headers(hub, tmp_path):
    state, endpoint = hub
    size = llama3_8b(tmp_path)
    state.repos["meta-llama/Llama-3-8B"] = str(tmp_path)
    remote = _reader(endpoint, repo="meta-llama/Llama-3-8B").safetensors()
    local = read_local_model(str(tmp_path))
    assert remote.tensors == local.tensors and remote.config == local.config
    assert remote.source == "huggingface meta-llama/Llama-3-8B"
    # the listing (huggingface_hub), config.json, the index, one range per shard (each header < 64 KiB)
    assert len(state.requests) == 1 + 1 + 1 + 4 * 2  # a shard's request is redirected to the CDN path
    assert size > 16_000_000_000 and state.bytes_served < 4 * 64 * 1024 + 64 * 1024
    assert estimate_vllm(remote, VllmOptions()).weights_bytes == 16_060_522_496


def test_long_headers_take_a_second_range(hub, tmp_path):
    state, endpoint = hub
    llama3_8b(tmp_path, pad_to=100_000)
    state.repos["org/padded"] = str(tmp_path)
    remote = _reader(endpoint, repo="org/padded").safetensors()
    assert len(remote.tensors) == 291
    assert sum(1 for r in state.requests if r.startswith("/cdn/")) == 4 * 2


def test_modelscope_api_shape_and_default_branch(hub, tmp_path):
    state, endpoint = hub
    tiny_llama(str(tmp_path), shards=2)
    state.repos["qwen/tiny"] = str(tmp_path)
    remote = _reader(endpoint, "modelscope", "qwen/tiny").safetensors()
    assert remote.source == "modelscope qwen/tiny"
    assert remote.total_bytes == read_local_model(str(tmp_path)).total_bytes
    assert any(r.startswith("/api/v1/models/qwen/tiny/repo/files?Revision=master") for r in state.requests)
    assert any("FilePath=model-00001-of-00002.safetensors" in r for r in state.requests)


def test_a_missing_repository_says_what_to_check(hub):
    _, endpoint = hub
    with pytest.raises(SourceError, match="huggingface nobody/nothing: no such repository") as err:
        _reader(endpoint, repo="nobody/nothing").safetensors()
    assert "private repository give a token (HF_TOKEN" in str(err.value)
    with pytest.raises(SourceError, match="modelscope nobody/nothing: no such model"):
        _reader(endpoint, "modelscope", "nobody/nothing").safetensors()


def test_a_private_repository_opens_with_its_token(hub, tmp_path):
    state, endpoint = hub
    tiny_llama(str(tmp_path))
    state.repos["corp/secret"] = str(tmp_path)
    state.private["corp/secret"] = "hf_abc"
    with pytest.raises(SourceError, match="or it is private or gated"):
        _reader(endpoint, repo="corp/secret").safetensors()
    with pytest.raises(SourceError, match="the token given has no access"):
        _reader(endpoint, repo="corp/secret", HF_TOKEN="hf_wrong").safetensors()
    assert _reader(endpoint, repo="corp/secret", HF_TOKEN="hf_abc").safetensors().total_bytes == 5_485_056


def test_a_server_that_ignores_range_is_refused(hub, tmp_path):
    state, endpoint = hub
    tiny_llama(str(tmp_path))
    state.repos["org/norange"] = str(tmp_path)
    state.ignore_range = True
    with pytest.raises(SourceError, match="ignored the Range header .* refusing to download it"):
        _reader(endpoint, repo="org/norange").safetensors()


def test_a_corrupt_remote_header_names_the_file(hub, tmp_path):
    state, endpoint = hub
    tiny_llama(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    state.repos["org/broken"] = str(tmp_path)
    with pytest.raises(SourceError, match="org/broken: model.safetensors: not a safetensors file"):
        _reader(endpoint, repo="org/broken").safetensors()


def test_an_unreachable_endpoint_names_the_variable_to_check():
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceError, match="cannot reach http://127.0.0.1:.*HF_ENDPOINT"):
        _reader(endpoint, repo="a/b").safetensors()


def test_a_local_path_makes_no_network_call(tmp_path, monkeypatch):
    tiny_llama(str(tmp_path))

    def refuse(*args, **kwargs):
        raise AssertionError("network used for a local model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(httpx.Client, "send", refuse)
    assert estimate_safetensors_report(str(tmp_path), [])["weights_bytes"] == 5_485_056


def test_a_gguf_header_is_read_over_ranges_and_a_pattern_finds_the_file(hub, tmp_path):
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
    (header,) = _reader(endpoint, repo="org/gguf", filename="*q8_0.gguf").gguf_shards()
    local = read_gguf_header(path)
    assert header.tensors == local.tensors and header.metadata == local.metadata
    assert header.file_size == path.stat().st_size
    assert state.bytes_served < header.data_offset + 2 * (1 << 20) + 64 * 1024
