"""The speech engine, driven with the official openai client: vox-box transcribes sentences espeak-ng
speaks, gpustack-speech's hibari voice speaks valid audio of plausible length in each format, and a
folder neither can serve stops the engine with a reason."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from tests.engines.conftest import Engine, SpeechInstall

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sound_tools")]

FOX = "The quick brown fox jumps over the lazy dog."
INVOICE = "Please send the invoice to the finance team before Friday."


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def client(engine: Engine) -> OpenAI:
    return OpenAI(base_url=engine.base_url, api_key="unused", max_retries=0, timeout=120)


def speak(text: str, path: Path) -> Path:
    """espeak-ng's voice saying `text`, as a 22.05 kHz mono WAV."""
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(path), text], check=True)
    return path


def soxi(path: Path, flag: str) -> str:
    return subprocess.run(
        ["soxi", flag, str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_a_spoken_sentence_is_transcribed_with_its_words(stt_engine: Engine, tmp_path: Path) -> None:
    wav = speak(FOX, tmp_path / "fox.wav")
    with wav.open("rb") as audio:
        result = client(stt_engine).audio.transcriptions.create(model="whisper-tiny.en", file=audio)
    # tiny.en hears espeak's "jumps" as "jump": the content words are what must come through.
    assert {"quick", "brown", "fox", "lazy", "dog"} <= words(result.text), result.text


def test_a_flac_upload_is_transcribed_as_text_and_verbose_json(stt_engine: Engine, tmp_path: Path) -> None:
    flac = tmp_path / "window.flac"
    subprocess.run(
        [
            "sox",
            str(speak("Open the window and let the fresh air in.", tmp_path / "w.wav")),
            "-r",
            "16000",
            str(flac),
        ],
        check=True,
    )
    api = client(stt_engine)
    with flac.open("rb") as audio:
        text = api.audio.transcriptions.create(model="whisper-tiny.en", file=audio, response_format="text")
    assert {"window", "fresh", "air"} <= words(str(text)), text

    with flac.open("rb") as audio:
        verbose = api.audio.transcriptions.create(
            model="whisper-tiny.en", file=audio, response_format="verbose_json"
        )
    assert verbose.language == "en"
    assert verbose.duration == pytest.approx(float(soxi(flac, "-D")), abs=0.05)
    assert verbose.segments and {"window", "fresh", "air"} <= words(verbose.text)


def test_speech_is_a_wav_of_plausible_length(tts_engine: Engine, tmp_path: Path) -> None:
    response = client(tts_engine).audio.speech.create(
        model="hibari", voice="heart", input=INVOICE, response_format="wav"
    )
    wav = tmp_path / "invoice.wav"
    wav.write_bytes(response.content)
    assert response.response.headers["content-type"] == "audio/wav"
    assert soxi(wav, "-t") == "wav" and soxi(wav, "-r") == "24000" and soxi(wav, "-c") == "1"
    seconds = float(soxi(wav, "-D"))
    spoken = len(INVOICE.split())  # 10 words: people say 2 to 4 a second
    assert spoken / 6 < seconds < spoken / 1.5, seconds


def test_speech_as_mp3_transcribes_back_to_its_words(
    tts_engine: Engine, stt_engine: Engine, tmp_path: Path
) -> None:
    speech = client(tts_engine).audio.speech.create(model="hibari", voice="heart", input=INVOICE)  # mp3
    mp3 = tmp_path / "invoice.mp3"
    mp3.write_bytes(speech.content)
    head = speech.content[:3]
    assert head == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0)  # a tag, or an MPEG frame
    with mp3.open("rb") as audio:
        heard = client(stt_engine).audio.transcriptions.create(model="whisper-tiny.en", file=audio)
    assert {"invoice", "finance", "team", "friday"} <= words(heard.text), heard.text


@pytest.mark.parametrize(
    ("response_format", "magic"),
    [("flac", b"fLaC"), ("opus", b"OggS"), ("aac", b"\xff\xf1"), ("wav", b"RIFF")],
)
def test_each_response_format_is_that_format(
    tts_engine: Engine, tmp_path: Path, response_format: str, magic: bytes
) -> None:
    speech = client(tts_engine).audio.speech.create(
        model="hibari",
        voice="heart",
        input="One, two, three.",
        response_format=response_format,  # type: ignore[arg-type]
    )
    assert speech.content.startswith(magic)
    if response_format == "opus":
        assert b"OpusHead" in speech.content[:200]
    if response_format in ("flac", "wav"):
        path = tmp_path / f"count.{response_format}"
        path.write_bytes(speech.content)
        assert 0.5 < float(soxi(path, "-D")) < 4.0


def test_pcm_is_raw_16_bit_samples_at_24_khz(tts_engine: Engine) -> None:
    speech = client(tts_engine).audio.speech.create(
        model="hibari", voice="heart", input="One, two, three.", response_format="pcm"
    )
    assert len(speech.content) % 2 == 0
    assert 0.5 < len(speech.content) / 2 / 24000 < 4.0


def test_a_faster_speed_speaks_the_same_text_in_less_time(tts_engine: Engine) -> None:
    api = client(tts_engine)
    normal = api.audio.speech.create(model="hibari", voice="heart", input=INVOICE, response_format="pcm")
    fast = api.audio.speech.create(
        model="hibari", voice="heart", input=INVOICE, response_format="pcm", speed=1.5
    )
    assert len(fast.content) < 0.85 * len(normal.content)


def test_a_voice_the_model_lacks_is_refused_with_the_voices_it_has(tts_engine: Engine) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(tts_engine).audio.speech.create(model="hibari", voice="alloy", input="Hello.")
    assert "'alloy' is not one of this model's voices (heart)" in str(refused.value)


def test_a_speed_outside_the_models_range_is_refused(tts_engine: Engine) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(tts_engine).audio.speech.create(model="hibari", voice="heart", input="Hello.", speed=3.0)
    assert "speed must be between 0.5 and 2.0" in str(refused.value)


def test_the_tts_engine_lists_its_model_and_voices(tts_engine: Engine) -> None:
    api = client(tts_engine)
    assert [m.id for m in api.models.list()] == ["hibari"]
    voices = api.get("/voices", cast_to=object)
    assert voices == {"voices": ["heart"]}


def _run(install: SpeechInstall, model: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(install.engine), "--model", str(model), "--port", "9", "--data-dir", str(model.parent / "d")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_a_missing_model_folder_stops_the_engine_with_exit_2(
    speech_install: SpeechInstall, tmp_path: Path
) -> None:
    result = _run(speech_install, tmp_path / "nowhere")
    assert result.returncode == 2
    assert f"model path {tmp_path / 'nowhere'} does not exist" in result.stderr


def test_a_hibari_registry_without_voice_files_names_the_missing_files(
    speech_install: SpeechInstall, tmp_path: Path
) -> None:
    folder = tmp_path / "voices"
    folder.mkdir()
    (folder / "voices.json").write_bytes((speech_install.tts_model / "voices.json").read_bytes())
    result = _run(speech_install, folder)
    assert result.returncode == 2
    assert "heart (hibari.onnx)" in result.stderr and "none of those files is in" in result.stderr


def test_a_folder_no_engine_recognises_says_which_formats_are_served(
    speech_install: SpeechInstall, tmp_path: Path
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a model")
    result = _run(speech_install, folder)
    assert result.returncode == 2  # vox-box's own `vox-box start` would log it and exit 0
    assert "vox-box 0.0.21 cannot serve" in result.stderr
    assert "faster-whisper" in result.stderr and "hibari voice folders" in result.stderr
