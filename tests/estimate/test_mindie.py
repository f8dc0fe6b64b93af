"""The Ascend MindIE memory model, hand-checked."""

from __future__ import annotations

import pytest

from gpustack.estimate.mindie import estimate_mindie, estimate_mindie_report, parse_mindie_options
from gpustack.estimate.safetensors import read_local_model
from gpustack.estimate.vllm import GiB, MiB
from tests.estimate.fixtures.safetensors_models import tiny_llama


def test_tiny_llama_hand_checked(tmp_path):
    tiny_llama(str(tmp_path))
    estimate = estimate_mindie(read_local_model(str(tmp_path)), parse_mindie_options([]))
    assert estimate.max_model_len == 4096  # min(8192, the model's 4096)
    # 32 blocks of 128 tokens × 4 layers × 256 bytes per token and layer, plus one reserved block
    assert estimate.kv_cache_bytes == 4 * 4096 * 256 + 4 * 128 * 256 == 4_325_376
    # warm-up prefill of maxPrefillTokens = 4096 tokens: stream 4×4096×256×2 + MLP 3×4096×512×2
    assert estimate.activation_bytes == 8_388_608 + 12_582_912
    assert estimate.overhead_bytes == 768 * MiB
    assert estimate.per_gpu_bytes(1) == 5_485_056 + 4_325_376 + 20_971_520 + 805_306_368
    assert estimate.check_gpu(32 * GiB, 20 * GiB, 1, estimate.options) == (
        "needs 90% of 32.0 GiB (28.8 GiB) allocatable, has 20.0 GiB"
    )
    assert estimate.check_gpu(32 * GiB, 32 * GiB, 1, estimate.options) is None


def test_options_and_report(tmp_path):
    tiny_llama(str(tmp_path))
    options = parse_mindie_options(["--max-seq-len=1024", "--npu-memory-fraction", "0.8", "-tp", "2"])
    assert (options.max_seq_len, options.npu_memory_fraction, options.tensor_parallel_size) == (1024, 0.8, 2)
    report = estimate_mindie_report(str(tmp_path), ["--max-seq-len=1024"])
    assert report["max_seq_len"] == 1024 and report["backend"] == "ascend-mindie"
    with pytest.raises(ValueError, match="--cache-block-size: invalid value '100'"):
        parse_mindie_options(["--cache-block-size=100"])
    with pytest.raises(ValueError, match="--npu-memory-fraction"):
        parse_mindie_options(["--npu-memory-fraction=0"])


def test_budget_message_names_the_fraction(tmp_path):
    tiny_llama(str(tmp_path))
    estimate = estimate_mindie(read_local_model(str(tmp_path)), parse_mindie_options([]))
    message = estimate.check_gpu(GiB // 2, GiB // 2, 1, estimate.options)
    assert message is not None and "(--npu-memory-fraction 0.9)" in message


def test_world_size_follows_gpustacks_mindie_rules():
    assert parse_mindie_options(["-tp", "8", "-pp", "2"]).devices == 16  # tp x pp
    assert parse_mindie_options(["--data-parallel-size", "2", "-tp", "4"]).devices == 8  # dp x tp
    assert parse_mindie_options(["-tp", "16"]).devices == 16
    assert not parse_mindie_options([]).parallel_given
    with pytest.raises(ValueError, match="-dp: invalid value '3'"):
        parse_mindie_options(["-dp", "3"])
    with pytest.raises(ValueError, match="cannot be used together with MindIE: choose one"):
        parse_mindie_options(["-pp", "2", "-dp", "2"])
