"""`gpustack estimate`: the table, --json, dispatch to the other estimators, and one-line errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from gpustack.cli import estimate as cli
from gpustack.estimate.gguf import read_gguf_header
from gpustack.estimate.llama_box import estimate_llama_box, parse_llama_box_options
from gpustack.estimate.report import size
from tests.conftest import free_port
from tests.fixtures.hubs import HubState, hub_server

from .test_gguf import write_model
from .test_gguf_mmproj import write_projector


def gpustack(*argv: str) -> int:
    """Run the command as `gpustack estimate ...` would, through a parser that registers it."""
    parser = argparse.ArgumentParser(prog="gpustack")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["estimate", *argv])
    result: int = args.handler(args)
    return result


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "tiny.gguf", n_layer=30)


def test_table_reads_at_a_glance(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpustack(str(model), "--ctx-size", "2048", "-np", "1") == 0
    out = capsys.readouterr().out
    estimate = estimate_llama_box(
        read_gguf_header(model), parse_llama_box_options(["-c", "2048", "-np", "1"])
    )
    assert "llama, 30 layers + output, vocabulary 256" in out
    assert "ctx 2048 (2048 per slot), parallel 1, flash attention on, KV f16/f16" in out
    assert f"CPU only                   {size(estimate.cpu_only.ram)}" in out
    full = (
        f"all 31 layers on one GPU   {size(estimate.full_offload.ram)}   {size(estimate.full_offload.vram)}"
    )
    assert full in out
    # condensed: every 4th layer count of 31, and the last
    rows = [
        line.split()[0] for line in out.splitlines() if "/31" in line and not line.strip().startswith("all")
    ]
    assert rows == ["0/31", "4/31", "8/31", "12/31", "16/31", "20/31", "24/31", "28/31", "31/31"]
    # GPUStack runs llama.cpp's server with its prompt cache off (--cache-ram 0) unless told otherwise.
    assert "prompt cache" not in out


def test_json_has_everything(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpustack(str(model), "--json", "-c", "4096") == 0  # --json may follow the model too
    report = json.loads(capsys.readouterr().out)
    estimate = estimate_llama_box(read_gguf_header(model), parse_llama_box_options(["-c", "4096"]))
    assert report["backend"] == "llama-box"
    assert report["model"]["architecture"] == "llama" and report["model"]["layers"] == 30
    assert report["options"]["ctx_size"] == 4096 and report["options"]["parallel"] == 4
    assert report["cpu_only"] == {"ram_bytes": estimate.cpu_only.ram, "vram_bytes": 0}
    assert report["full_offload"]["vram_bytes"] == estimate.full_offload.vram
    assert len(report["offload_table"]) == 32
    assert report["offload_table"][5] == {
        "layers": 5,
        "ram_bytes": estimate.offload(5).ram,
        "vram_bytes": estimate.offload(5).vram,
    }
    assert report["buffers"]["kv_cache_bytes"] == estimate.kv_cache_bytes
    assert report["growth_bytes"] == 0  # the prompt cache is off, as GPUStack runs the engine
    assert "devices" not in report


def test_a_prompt_cache_the_user_asks_for_is_counted(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpustack(str(model), "--json", "--cache-ram", "1024") == 0
    assert json.loads(capsys.readouterr().out)["growth_bytes"] == 1024 * 1024**2


def test_engine_options_after_a_double_dash(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpustack("--json", str(model), "--", "-c", "1024", "-np", "2") == 0
    assert json.loads(capsys.readouterr().out)["options"]["ctx_size"] == 1024


def test_rpc_and_tensor_split_show_the_devices(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--rpc", "10.0.0.2:40064", "-ngl", "99", "-ts", "10,21"]
    assert gpustack("--json", str(model), *args) == 0
    devices = json.loads(capsys.readouterr().out)["devices"]
    estimate = estimate_llama_box(read_gguf_header(model), parse_llama_box_options(args))
    placed = estimate.split([10, 21])
    assert devices["gpu_layers"] == 31 and devices["tensor_split"] == "10,21"
    assert devices["ram_bytes"] == placed.ram
    assert devices["per_device"] == [
        {"name": "RPC0 (10.0.0.2:40064)", "layers": 10, "vram_bytes": placed.vram[0]},
        {"name": "GPU0", "layers": 21, "vram_bytes": placed.vram[1]},
    ]
    assert gpustack(str(model), *args) == 0
    out = capsys.readouterr().out
    assert "split over 2 devices (-ngl 31 --tensor-split 10,21)" in out
    assert "RPC servers come first" in out


def test_rpc_without_tensor_split_says_the_engine_decides(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpustack(str(model), "--rpc", "a:1,b:2") == 0
    assert "splits the layers by free memory; pass --tensor-split to see the split" in capsys.readouterr().out


def test_projector_next_to_the_model_is_included(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_projector(model.parent / "mmproj-f16.gguf")
    assert gpustack("--json", str(model)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["projector"].endswith("mmproj-f16.gguf")
    assert report["buffers"]["projector_bytes"] > 0
    assert gpustack("--json", str(model), "--no-mmproj") == 0
    assert json.loads(capsys.readouterr().out)["model"]["projector"] is None


def test_a_folder_with_one_gguf_model_is_that_model(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_projector(model.parent / "mmproj.gguf")
    assert gpustack("--json", str(model.parent)) == 0
    assert json.loads(capsys.readouterr().out)["source"] == str(model)


# --- errors: one line on stderr ------------------------------------------------------------------------


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpustack(str(tmp_path / "nothere.gguf")) == 2
    assert _error(capsys) == f"gpustack estimate: {tmp_path / 'nothere.gguf'}: no such file or directory"


def test_file_that_is_not_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04" + bytes(64))
    assert gpustack(str(path)) == 1
    assert _error(capsys) == f"gpustack estimate: {path} is not a GGUF file (magic b'PK\\x03\\x04')"


def test_truncated_file(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model.write_bytes(model.read_bytes()[:300])
    assert gpustack(str(model)) == 1
    line = _error(capsys)
    assert line.startswith(f"gpustack estimate: {model}: ") and "truncated at byte 300" in line


def test_bad_engine_option(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpustack(str(model), "--ctx-size", "lots") == 2
    expected = "--ctx-size: expects a positive integer (or 0 for the model's own context length), got 'lots'"
    assert _error(capsys) == f"gpustack estimate: {expected}"
    assert gpustack(str(model), "--backend", "tgi") == 2
    assert "--backend: expects one of auto, llama-box, vllm, ascend-mindie, got 'tgi'" in _error(capsys)


def test_projector_given_as_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    projector = write_projector(tmp_path / "mmproj.gguf")
    assert gpustack(str(projector)) == 2
    assert "is a multimodal projector: estimate its model and pass --mmproj" in _error(capsys)


def test_errors_from_a_subprocess_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"nope")
    done = subprocess.run(
        [sys.executable, "-m", "gpustack", "estimate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"gpustack estimate: {path} is not a GGUF file (magic b'nope')\n"


# --- dispatch to the safetensors and remote estimators -------------------------------------------------


def test_safetensors_folder_goes_to_the_vllm_estimator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    calls: list[tuple[str, list[str]]] = []

    def fake(path: str, params: list[str]) -> dict[str, Any]:
        calls.append((path, params))
        return {"backend": "vllm", "weights_bytes": 3 << 30, "per_gpu_bytes": {"1": 5 << 30}}

    monkeypatch.setitem(
        sys.modules, "gpustack.estimate.vllm", types.SimpleNamespace(estimate_safetensors_report=fake)
    )
    assert gpustack(str(tmp_path), "--max-model-len", "4096") == 0
    assert calls == [(str(tmp_path), ["--max-model-len", "4096"])]
    assert capsys.readouterr().out.splitlines() == [
        "backend: vllm",
        "weights: 3.00 GiB",
        "per_gpu:",
        "  1: 5.00 GiB",
    ]


def test_a_missing_estimator_is_not_supported_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "gpustack.estimate.vllm", types.SimpleNamespace())
    assert gpustack(str(tmp_path)) == 2
    assert _error(capsys) == (
        "gpustack estimate: estimating safetensors models is not supported yet "
        "(gpustack.estimate.vllm.estimate_safetensors_report)"
    )


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hf:org/repo/sub/model-Q4_K_M.gguf", ("huggingface", "org/repo", "sub/model-Q4_K_M.gguf")),
        ("hf:org/repo", ("huggingface", "org/repo", None)),
        ("ms:org/repo/m.gguf", ("modelscope", "org/repo", "m.gguf")),
        ("Qwen/Qwen2.5-0.5B-Instruct", ("huggingface", "Qwen/Qwen2.5-0.5B-Instruct", None)),
        ("./org/repo", None),
        ("/models/x.gguf", None),
        ("x.gguf", None),
    ],
)
def test_remote_references(ref: str, expected: tuple[str, str, str | None] | None) -> None:
    assert cli._remote_ref(ref) == expected


def test_remote_gguf_is_read_through_the_huggingface_source(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tiny.gguf").write_bytes(model.read_bytes())
    state = HubState(repos={"org/repo": str(repo)})
    with hub_server(state) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        assert gpustack("--json", "hf:org/repo/tiny.gguf", "-c", "2048") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "huggingface:org/repo/tiny.gguf"
    assert report["options"]["ctx_size"] == 2048
    assert any(r.startswith("/api/models/org/repo/revision/main") for r in state.requests)


def test_remote_network_failure_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert gpustack("hf:org/repo/m.gguf") == 1
    error = _error(capsys)
    assert error.startswith("gpustack estimate: huggingface org/repo: cannot reach http://127.0.0.1:")
    assert "\n" not in error and "HF_ENDPOINT" in error
