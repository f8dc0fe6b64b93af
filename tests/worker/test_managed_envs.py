"""Managed environments per (backend, version): installed for real with pip, offline, from wheels a test
builds; whole or absent, once, with progress and pip's own words when it fails."""

from __future__ import annotations

import asyncio
import io
import subprocess
from pathlib import Path

import pytest

from gpustack.backends.base import Executable, PipPackage
from gpustack.schemas.models import ModelSpec
from gpustack.worker.engines.managed import InstallFailed, ensure_env, installed_versions
from gpustack.worker.engines.resolve import Directories, NotInstalled, find, resolve
from tests.worker.wheels import build_wheel


@pytest.fixture
def offline_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees only a local folder of wheels (PIP_NO_INDEX, PIP_FIND_LINKS: the worker's environment)."""
    wheels = tmp_path / "index"
    build_wheel(wheels, version="0.1.0")
    build_wheel(wheels, version="0.2.0")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def __call__(self, message: str) -> None:
        self.messages.append(message)


def _install(root: Path, version: str, *requirements: str) -> tuple[Path, Recorder, str]:
    progress, log = Recorder(), io.BytesIO()
    package = PipPackage(requirements or (f"tinyengine=={version}",))
    env = asyncio.run(ensure_env(root, "tinyengine", version, package, progress, log))
    return env.path, progress, log.getvalue().decode()


def _leftovers(root: Path) -> list[str]:
    folder = root / "tinyengine"
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


@pytest.mark.usefixtures("offline_index")
def test_a_version_installs_into_its_own_environment_once_and_its_scripts_run(tmp_path: Path) -> None:
    root = tmp_path / "backends"
    path, progress, log = _install(root, "0.1.0")
    assert path == root / "tinyengine" / "0.1.0"
    assert progress.messages[0] == "installing tinyengine 0.1.0: creating the environment"
    assert "Successfully installed tinyengine-0.1.0" in log
    # Built in a temporary folder and renamed: its console scripts name the final interpreter.
    script = subprocess.run([str(path / "bin" / "tinyengine")], capture_output=True, text=True, check=True)
    assert script.stdout.strip() == "tinyengine 0.1.0"
    assert installed_versions(root, "tinyengine") == ["0.1.0"] and _leftovers(root) == ["0.1.0"]
    again, progress, log = _install(root, "0.1.0")
    assert again == path and progress.messages == [] and log == ""  # cached: pip does not run again


@pytest.mark.usefixtures("offline_index")
def test_an_unknown_version_names_the_versions_the_index_offers_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "backends"
    with pytest.raises(InstallFailed) as failed:
        _install(root, "9.9")
    message = str(failed.value)
    assert "tinyengine has no version 9.9 on the package index; it offers: 0.1.0, 0.2.0" in message
    assert "No matching distribution found for tinyengine==9.9" in message  # pip's own words
    assert _leftovers(root) == []


@pytest.mark.usefixtures("offline_index")
def test_a_failing_install_shows_pips_last_lines_and_leaves_nothing_half_installed(tmp_path: Path) -> None:
    root = tmp_path / "backends"
    with pytest.raises(InstallFailed) as failed:
        _install(root, "0.2.0", "tinyengine==0.2.0", "no-such-engine-package==1.0")
    message = str(failed.value)
    assert message.startswith("no-such-engine-package") or "no-such-engine-package" in message
    assert "ERROR:" in message and _leftovers(root) == []
    path, _, _ = _install(root, "0.2.0")  # a later try starts clean
    assert _leftovers(root) == ["0.2.0"] and (path / ".gpustack-complete").is_file()


@pytest.mark.usefixtures("offline_index")
def test_two_installs_of_one_version_at_once_run_pip_once(tmp_path: Path) -> None:
    root = tmp_path / "backends"
    logs = [io.BytesIO(), io.BytesIO()]
    progress = [Recorder(), Recorder()]
    package = PipPackage(("tinyengine==0.1.0",))

    async def both() -> list:
        return await asyncio.gather(
            *(ensure_env(root, "tinyengine", "0.1.0", package, progress[i], logs[i]) for i in range(2))
        )

    first, second = asyncio.run(both())
    assert first.path == second.path
    assert sum(log.getvalue().count(b"gpustack installs tinyengine 0.1.0") for log in logs) == 1
    waited = [m for p in progress for m in p.messages if "waiting for another install" in m]
    assert waited == ["installing tinyengine 0.1.0: waiting for another install of it to finish"]


class TinyBackend:
    """A backend whose versions are pip packages: what vLLM and vox-box are to the worker."""

    name = "tinyengine"
    default_version = "0.1.0"
    reads_help = False

    def pip_package(self, version: str, gpu_type: str | None) -> PipPackage | None:
        return PipPackage((f"tinyengine=={version}",))

    def programs(self, spec: ModelSpec) -> tuple[str, ...]:
        return ("tinyengine",)


@pytest.mark.usefixtures("offline_index")
def test_a_pinned_executable_wins_then_the_managed_environment_installed_on_demand(tmp_path: Path) -> None:
    dirs = Directories(tmp_path / "bin", tmp_path / "backends")
    backend = TinyBackend()
    spec = ModelSpec(local_path="/m")

    def run(model: ModelSpec) -> Executable:
        return asyncio.run(resolve(backend, model, dirs, None, Recorder(), io.BytesIO()))  # type: ignore[arg-type]

    managed = run(spec)  # the pinned default version, installed on demand
    assert managed.origin == "managed" and managed.version == "0.1.0" and managed.python
    assert managed.script("tinyengine") == str(
        dirs.backends_dir / "tinyengine" / "0.1.0" / "bin" / "tinyengine"
    )
    dirs.bin_dir.mkdir()
    pinned = dirs.bin_dir / "tinyengine_0.2.0"
    pinned.write_text("#!/bin/sh\necho pinned\n")
    pinned.chmod(0o755)
    chosen = run(ModelSpec(local_path="/m", backend_version="0.2.0"))
    assert (chosen.origin, chosen.path) == ("bin-dir", str(pinned))
    assert installed_versions(dirs.backends_dir, "tinyengine") == ["0.1.0"]  # nothing installed for it


def test_a_backend_without_packages_names_what_is_installed(tmp_path: Path) -> None:
    from gpustack.backends.registry import backend_of

    dirs = Directories(tmp_path / "bin", tmp_path / "backends")
    with pytest.raises(
        NotInstalled, match=r"ascend-mindie version 2.0 is not installed.*Installed here: none"
    ):
        find(backend_of("ascend-mindie"), ModelSpec(local_path="/m", backend_version="2.0"), dirs, "npu")
