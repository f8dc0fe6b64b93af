"""Speech engine fixtures: the environment scripts/install-speech.sh prepared, its models, and engines
started from it as real processes on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, require_or_skip

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install-speech.sh"
# The first start of a fresh environment compiles what it imports (torch, transformers: ~15 s here).
READY_TIMEOUT = 180.0


@dataclass(frozen=True)
class SpeechInstall:
    engine: Path  # the environment's gpustack-speech
    stt_model: Path  # Whisper tiny.en, CTranslate2 (faster-whisper) format
    tts_model: Path  # hibari's "heart" voice


def _script(*args: str) -> str:
    result = subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/install-speech.sh {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


@pytest.fixture(scope="session")
def speech_install() -> SpeechInstall:
    """The speech environment; scripts/setup.sh prepares it (the first time: downloads, ~4 minutes)."""
    cache = Path(_script("--print-cache-dir").strip())
    require_or_skip(
        (cache / "wheels" / ".complete").is_file(),
        "the speech engine's wheels (bash scripts/install-speech.sh)",
    )
    # Prepared before: this only (re)installs what changed, such as engines/speech's own code.
    lines = dict(line.split(": ", 1) for line in _script().splitlines() if ": " in line)
    return SpeechInstall(Path(lines["engine"]), Path(lines["stt-model"]), Path(lines["tts-model"]))


@pytest.fixture(scope="session")
def sound_tools() -> None:
    have = shutil.which("espeak-ng") is not None and shutil.which("sox") is not None
    require_or_skip(have, "espeak-ng and sox (apt-get install espeak-ng sox)")


@dataclass
class Engine:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_engine(install: SpeechInstall, model: Path, folder: Path, *extra: str) -> Engine:
    port = free_port()
    log = folder / f"engine-{port}.log"
    argv = [str(install.engine), "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--data-dir", str(folder / "data"), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    engine = Engine(process, port, log)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the speech engine exited with {process.returncode}:\n{engine.log_tail()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return engine
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop_engine(engine)
    pytest.fail(f"the speech engine was not ready in {READY_TIMEOUT:.0f} s:\n{engine.log_tail()}")


def stop_engine(engine: Engine) -> None:
    if engine.process.poll() is None:
        engine.process.terminate()
        try:
            engine.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            engine.process.kill()
            engine.process.wait()


@pytest.fixture(scope="module")
def stt_engine(speech_install: SpeechInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """vox-box itself serving Whisper tiny.en (through gpustack-speech, which hands the folder to it)."""
    engine = start_engine(speech_install, speech_install.stt_model, tmp_path_factory.mktemp("stt"))
    yield engine
    stop_engine(engine)


@pytest.fixture(scope="module")
def tts_engine(speech_install: SpeechInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """gpustack-speech serving hibari's heart voice."""
    engine = start_engine(
        speech_install,
        speech_install.tts_model,
        tmp_path_factory.mktemp("tts"),
        "--served-model-name",
        "hibari",
    )
    yield engine
    stop_engine(engine)
