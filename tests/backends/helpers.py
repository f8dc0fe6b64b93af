"""Building a backend's command for a placement in tests, without a worker."""

from __future__ import annotations

from typing import Any

from gpustack.backends.base import Command, Devices, Executable, Launch
from gpustack.backends.registry import backend_of
from gpustack.schemas.models import ModelSpec
from gpustack.schemas.placement import Layout, PlacementMode


def spec(backend: str = "llama-box", **fields: Any) -> ModelSpec:
    fields.setdefault("local_path", "/m.gguf" if backend == "llama-box" else "/models/m")
    return ModelSpec(backend=backend, **fields)  # type: ignore[arg-type]


def command(
    model: ModelSpec,
    executable: Executable,
    layout: Layout | None = None,
    devices: Devices | None = None,
    name: str = "m",
    port: int = 40000,
    run_dir: str = "/run/1",
) -> Command:
    backend = backend_of(model.backend)
    options = backend.parse_options(model.backend_parameters)
    devices = devices or Devices()
    launch = Launch(
        model_name=name,
        model_path=model.local_path or "",
        port=port,
        executable=executable,
        mode=PlacementMode.GPU if devices.indexes else PlacementMode.CPU,
        layout=layout,
        devices=devices,
        run_dir=run_dir,
    )
    result: Command = backend.command(model, options, launch)
    return result


def value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]
