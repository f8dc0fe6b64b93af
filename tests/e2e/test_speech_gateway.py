"""Speech through the whole cluster: two models deployed with backend vox-box through /v2/models, the worker
installing the speech engine's managed environment from the wheel cache scripts/install-speech.sh keeps
(pip told where by its own variables, as an operator would) and starting gpustack-speech, then the openai
client transcribing what espeak-ng says and speaking a sentence, through the gateway."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import require_or_skip
from tests.e2e.api import PASSWORD, Api
from tests.e2e.cluster import Cluster, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install-speech.sh"
# Installing the environment (2.7 GB of wheels, no compiling) and the engine's first start (Python compiles
# what torch imports) take minutes on a busy 2-core machine.
READY_SECONDS = 1200


def _script(*args: str) -> str:
    result = subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/install-speech.sh {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def pip_environment(pip_args: list[str]) -> dict[str, str]:
    """`install-speech.sh --print-pip-args` as pip's own variables, which reach the worker's pip."""
    env: dict[str, str] = {}
    items = iter(pip_args)
    for item in items:
        if item in ("-r", "--requirement"):
            env["PIP_REQUIREMENT"] = next(items)
        elif item == "--find-links":
            env["PIP_FIND_LINKS"] = next(items)
        elif item.startswith("--no-"):
            env["PIP_" + item[2:].upper().replace("-", "_")] = "1"
        else:
            raise AssertionError(f"unexpected pip argument {item!r}")
    return env


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Api, dict[str, Path]]]:
    cache = Path(_script("--print-cache-dir").strip())
    require_or_skip(
        (cache / "wheels" / ".complete").is_file(),
        "the speech engine's wheels (bash scripts/install-speech.sh)",
    )
    sound = all(
        subprocess.run(["which", tool], capture_output=True).returncode == 0 for tool in ("espeak-ng", "sox")
    )
    require_or_skip(sound, "espeak-ng and sox (apt-get install espeak-ng sox)")
    # Prepared before (setup.sh): this only rebuilds gpustack-speech's wheel if its sources changed.
    paths = dict(line.split(": ", 1) for line in _script("--no-venv").splitlines() if ": " in line)
    env = {**pip_environment(_script("--print-pip-args").split()), "HF_HUB_OFFLINE": "1"}
    cluster = Cluster(Path(tmp_path_factory.mktemp("speech")), PASSWORD)
    cluster.server.env.update(env)
    with cluster.running():
        api = Api(cluster.url)
        wait_until(lambda: api.http.get("/v2/workers").json()["items"], 30, "the embedded worker")
        yield cluster, api, {"stt": Path(paths["stt-model"]), "tts": Path(paths["tts-model"])}


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the client's translations call
def test_speech_models_deployed_with_vox_box_transcribe_and_speak_through_the_gateway(
    speech: tuple[Cluster, Api, dict[str, Path]], tmp_path: Path
) -> None:
    cluster, api, models = speech
    api.deploy({"name": "whisper", "backend": "vox-box", "local_path": str(models["stt"])})
    api.deploy({"name": "voice", "backend": "vox-box", "local_path": str(models["tts"])})
    for name in ("whisper", "voice"):

        def up(name: str = name) -> dict | None:
            instance = api.instance_of(name)
            if instance is not None and instance["state"] == "error":
                raise AssertionError(f"{name}: {instance['state_message']}")
            return instance if instance is not None and instance["state"] == "running" else None

        wait_until(up, READY_SECONDS, f"{name} to run", interval=2)
    key = api.http.post("/v2/api-keys", json={"name": "speech"}).json()["value"]
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=key, max_retries=0, timeout=300)

    said = tmp_path / "fox.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-v",
            "en-us",
            "-s",
            "140",
            "-w",
            str(said),
            "The quick brown fox jumps over the lazy dog.",
        ],
        check=True,
    )
    with said.open("rb") as audio:
        heard = client.audio.transcriptions.create(model="whisper", file=audio)
    assert {"quick", "brown", "fox", "lazy", "dog"} <= words(heard.text), heard.text

    spoken = client.audio.speech.create(model="voice", voice="heart", input="Hello from the gateway.",
                                        response_format="wav")  # fmt: skip
    out = tmp_path / "hello.wav"
    out.write_bytes(spoken.content)
    seconds = float(
        subprocess.run(["soxi", "-D", str(out)], check=True, capture_output=True, text=True).stdout
    )
    assert 0.5 < seconds < 10

    with pytest.raises(openai.BadRequestError) as refused:  # gpustack-speech has no translations route
        with said.open("rb") as audio:
            client.audio.translations.create(model="whisper", file=audio)
    assert "it serves /v1/audio/speech, /v1/audio/transcriptions" in refused.value.message
