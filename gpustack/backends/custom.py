"""custom: any OpenAI-compatible server, started from the user's command template (`run_command`).

Placeholders {model_path} {port} {host} {model_name} {gpu_indexes} are filled in per argument after the
template is split like a shell would, so a value with spaces stays one argument; {{ and }} are literal
braces. The backend parameters follow the template. Nothing is estimated: the instance claims what the
user states in `resources` (none: nothing, on the CPU).
"""

from __future__ import annotations

import shlex
import string
from dataclasses import dataclass

from gpustack.backends.argv import split_items
from gpustack.backends.base import (
    NOTHING_IGNORED,
    Command,
    IgnoredFields,
    Launch,
    PipPackage,
    Probe,
    Requirement,
)
from gpustack.backends.devices import VISIBLE_DEVICES_VARIABLES, visible_env
from gpustack.scheduler.request import SingleDeviceNeed
from gpustack.schemas.models import ModelSpec, SourceEnum, StatedResources
from gpustack.schemas.routes import TEXT_GENERATION, OpenAIRoute
from gpustack.sources.base import ModelReader
from gpustack.utils.engine_secret import ENVIRONMENT_VARIABLE as ENGINE_SECRET_VARIABLE
from gpustack.utils.units import format_bytes

PLACEHOLDERS = ("model_path", "port", "host", "model_name", "gpu_indexes")
DEFAULT_HEALTH_PATH = "/health"
_EXAMPLE = "llama-server -m {model_path} --host {host} --port {port}"
_ANY_GPU = frozenset(VISIBLE_DEVICES_VARIABLES) | {"mps"}


@dataclass(frozen=True)
class CustomOptions:
    """A custom engine's flags are its own: the parameters are appended to the template as given."""


def template_words(run_command: str) -> list[str]:
    """The template split like a shell would; ValueError for unbalanced quotes or unknown placeholders."""
    try:
        words = shlex.split(run_command)
    except ValueError as exc:
        raise ValueError(f"run_command cannot be split into arguments: {exc}") from None
    if not words:
        raise ValueError(f"run_command is empty; give the command that starts the engine, e.g. {_EXAMPLE}")
    for word in words:
        for name in placeholders(word):
            if name not in PLACEHOLDERS:
                known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                raise ValueError(
                    f"run_command: unknown placeholder {{{name}}}; use {known} "
                    "(write {{ and }} for literal braces)"
                )
    return words


def placeholders(word: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(word))
    except ValueError as exc:
        raise ValueError(f"run_command: {word!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
    found = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"run_command: {word!r}: placeholders are plain names such as {{port}}")
        found.append(name)
    return found


class Custom:
    name = "custom"
    default_version: str | None = None
    reads_help = False
    ignored_fields: IgnoredFields = NOTHING_IGNORED

    def pip_package(self, version: str, gpu_type: str | None) -> PipPackage | None:
        return None

    def programs(self, spec: ModelSpec) -> tuple[str, ...]:
        return (template_words(spec.run_command or "")[0],)

    def check_spec(self, spec: ModelSpec) -> None:
        if not spec.run_command:
            raise ValueError(
                f"backend custom needs run_command, the command that starts the engine, e.g. {_EXAMPLE}"
            )
        words = template_words(spec.run_command)
        used = {name for word in words for name in placeholders(word)}
        if "port" not in used:
            raise ValueError(
                "run_command must pass {port} to the engine: the worker chooses the port it listens on "
                f"(and {{host}}, so that it listens on loopback only), e.g. {_EXAMPLE}"
            )
        if "model_path" in used and spec.source == SourceEnum.LOCAL_PATH and not spec.local_path:
            raise ValueError("run_command uses {model_path}: set local_path to the model's absolute path")
        if spec.backend_version is not None:
            raise ValueError(
                "backend_version does not apply to backend custom: name the executable in run_command"
            )

    def parse_options(self, parameters: list[str]) -> CustomOptions:
        return CustomOptions()

    def requirement(
        self, spec: ModelSpec, options: CustomOptions, ray: bool, model: ModelReader | None = None
    ) -> Requirement:
        stated = spec.resources or StatedResources()
        if stated.gpus:
            need = SingleDeviceNeed(
                vram=stated.vram, ram_on_gpu=stated.ram, ram_on_cpu=0, gpu_types=_ANY_GPU, cpu_fallback=False
            )
            where = f"one GPU with {format_bytes(stated.vram)}"
        else:
            need = SingleDeviceNeed(vram=0, ram_on_gpu=0, ram_on_cpu=stated.ram, gpu_types=frozenset())
            where = "the CPU"
        return Requirement(need, f"custom command: {where}, RAM {format_bytes(stated.ram)} (as stated)")

    def command(self, spec: ModelSpec, options: CustomOptions, launch: Launch) -> Command:
        values = {
            "model_path": launch.model_path,
            "port": str(launch.port),
            "host": launch.host,
            "model_name": launch.model_name,
            "gpu_indexes": ",".join(str(i) for i in launch.devices.indexes),
        }
        words = [word.format(**values) for word in template_words(spec.run_command or "")]
        words[0] = launch.executable.path  # as the worker found it on PATH
        env = visible_env(launch.devices)
        if launch.api_key:
            # An engine of the user's own may require it of its callers; the gateway always presents it.
            env[ENGINE_SECRET_VARIABLE] = launch.api_key
        return Command(words + split_items(spec.backend_parameters), env)

    def probe(self, spec: ModelSpec, options: CustomOptions) -> Probe:
        return Probe(spec.health_path or DEFAULT_HEALTH_PATH)

    def routes(self, spec: ModelSpec, options: CustomOptions) -> frozenset[OpenAIRoute]:
        return frozenset(spec.routes) if spec.routes else TEXT_GENERATION


BACKEND = Custom()
