"""Mono float samples to the bytes of each response_format OpenAI's /v1/audio/speech offers."""

from __future__ import annotations

import io
import wave
from typing import Final

import numpy as np

# response_format -> (media type, PyAV container, PyAV codec); wav and pcm are written without PyAV.
FORMATS: Final[dict[str, tuple[str, str | None, str | None]]] = {
    "mp3": ("audio/mpeg", "mp3", "libmp3lame"),
    "opus": ("audio/ogg", "ogg", "libopus"),
    "aac": ("audio/aac", "adts", "aac"),
    "flac": ("audio/flac", "flac", "flac"),
    "wav": ("audio/wav", None, None),
    "pcm": ("audio/pcm", None, None),
}

# libopus encodes only these rates; other rates are resampled to 48 kHz for opus.
_OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] (clipped) as 16-bit signed integers."""
    return (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")


def encode(samples: np.ndarray, sample_rate: int, response_format: str) -> tuple[bytes, str]:
    """The encoded audio and its media type. Raises KeyError for a format not in FORMATS."""
    media_type, container, codec = FORMATS[response_format]
    pcm = to_pcm16(samples)
    if response_format == "pcm":
        # OpenAI's pcm: raw 16-bit signed little-endian samples, no header.
        return pcm.tobytes(), media_type
    if response_format == "wav":
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes(pcm.tobytes())
        return buffer.getvalue(), media_type
    assert container is not None and codec is not None
    return _encode_av(pcm, sample_rate, container, codec), media_type


def _encode_av(pcm: np.ndarray, sample_rate: int, container: str, codec: str) -> bytes:
    import av  # imported here: only the compressed formats need PyAV (and its bundled FFmpeg)

    out_rate = sample_rate
    if codec == "libopus" and sample_rate not in _OPUS_RATES:
        out_rate = 48000
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=out_rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=out_rate)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for converted in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(converted):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()
