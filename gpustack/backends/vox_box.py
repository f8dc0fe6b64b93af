"""vox-box: speech models (speech to text, text to speech) served with OpenAI's audio routes.

The engine is gpustack-speech (engines/speech): vox-box itself for the folders it knows (faster-whisper,
FunASR, Bark, CosyVoice, Dia) and hibari's voices for text to speech, one program with one command line:

    gpustack-speech --model <folder> --host <host> --port <port> --device <cpu|cuda:0> --data-dir <dir>

Its managed environment holds vox-box at the model's backend version and gpustack-speech. Neither is a
plain `pip install` on a CPU machine (torch's CUDA wheels, a repacked torchaudio): an operator points the
worker's pip at the wheel cache that scripts/install-speech.sh prepares, through pip's own variables
(PIP_NO_INDEX, PIP_FIND_LINKS, PIP_NO_DEPS, PIP_REQUIREMENT=<its requirements file>, PIP_NO_COMPILE), i.e.
what `install-speech.sh --print-pip-args` prints.
"""

from __future__ import annotations

import os

from gpustack.backends.argv import has_flag, split_items
from gpustack.backends.base import (
    NOTHING_IGNORED,
    Command,
    IgnoredFields,
    Launch,
    PipPackage,
    Probe,
    Requirement,
)
from gpustack.backends.devices import visible_env
from gpustack.backends.errors import ModelUnreadable
from gpustack.backends.fields import refuse_custom_fields, require_local_path
from gpustack.scheduler.request import SingleDeviceNeed
from gpustack.schemas.models import ModelSpec
from gpustack.schemas.routes import OpenAIRoute
from gpustack.sources.base import ModelReader, SourceError

GiB = 1024**3
ENGINE = "gpustack-speech"  # its console script
ENGINE_PACKAGE = "gpustack-speech"


class VoxBoxOptions:
    """vox-box takes few flags and none changes what the model needs: they are passed through."""


def _weights_bytes(path: str) -> int:
    try:
        if os.path.isdir(path):
            return sum(
                os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(path)
                for name in names
            )
        return os.path.getsize(path)
    except OSError as exc:
        raise ModelUnreadable(f"cannot read the model at {path}: {exc.strerror or exc}") from None


class VoxBox:
    name = "vox-box"
    default_version: str | None = "0.0.21"
    reads_help = False
    ignored_fields: IgnoredFields = NOTHING_IGNORED

    def pip_package(self, version: str, gpu_type: str | None) -> PipPackage | None:
        return PipPackage((f"vox-box=={version.removeprefix('v')}", ENGINE_PACKAGE))

    def programs(self, spec: ModelSpec) -> tuple[str, ...]:
        return (ENGINE,)

    def check_spec(self, spec: ModelSpec) -> None:
        refuse_custom_fields(spec, self.name)
        require_local_path(spec)

    def parse_options(self, parameters: list[str]) -> VoxBoxOptions:
        return VoxBoxOptions()

    def requirement(
        self, spec: ModelSpec, options: VoxBoxOptions, ray: bool, model: ModelReader | None = None
    ) -> Requirement:
        """Speech models are small; their weights plus a margin for activations, on one GPU or in RAM."""
        if model is None:
            weights = _weights_bytes(spec.local_path or "")
        else:
            try:
                weights = model.weights_bytes()
            except SourceError as exc:
                raise ModelUnreadable(str(exc)) from None
        vram = int(weights * 1.2) + GiB // 2
        need = SingleDeviceNeed(vram=vram, ram_on_gpu=GiB // 2, ram_on_cpu=int(weights * 1.5) + GiB)
        return Requirement(
            need, f"vox-box: weights {weights / GiB:.2f} GiB, about {vram / GiB:.2f} GiB on a GPU"
        )

    def command(self, spec: ModelSpec, options: VoxBoxOptions, launch: Launch) -> Command:
        device = "cuda:0" if launch.devices.indexes else "cpu"  # the one GPU it sees, after *_VISIBLE_DEVICES
        user = split_items(spec.backend_parameters)
        argv = [
            launch.executable.script(ENGINE),
            "--model", launch.model_path,
            "--device", device,
            "--data-dir", launch.run_dir,
        ]  # fmt: skip
        if not has_flag(user, "--served-model-name"):
            argv += ["--served-model-name", launch.model_name]  # what /v1/models reports
        argv += user + ["--host", launch.host, "--port", str(launch.port)]
        return Command(argv, visible_env(launch.devices))

    def probe(self, spec: ModelSpec, options: VoxBoxOptions) -> Probe:
        return Probe("/health")

    def routes(self, spec: ModelSpec, options: VoxBoxOptions) -> frozenset[OpenAIRoute]:
        # Which of the two a folder serves (speech to text or text to speech) is known only once the
        # engine reads it; the engine answers the other route with its own error. gpustack-speech has no
        # translations route.
        return frozenset({OpenAIRoute.AUDIO_TRANSCRIPTIONS, OpenAIRoute.AUDIO_SPEECH})


BACKEND = VoxBox()
