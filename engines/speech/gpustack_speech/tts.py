"""Text to speech with hibari's ONNX voices (English voices distilled from Kokoro-82M), on the CPU."""

from __future__ import annotations

import threading

import numpy as np

from gpustack_speech.formats import HibariModel

# hibari's documented range: 1.0 is the teacher's (Kokoro's) pace.
MIN_SPEED = 0.5
MAX_SPEED = 2.0


class HibariSpeech:
    """Every voice of one hibari model folder, loaded once; synthesize() is safe from several threads."""

    def __init__(self, model: HibariModel, threads: int = 1) -> None:
        from hibari import SAMPLE_RATE, Hibari
        from hibari.g2p import G2P

        self.sample_rate = int(SAMPLE_RATE)
        self.languages = sorted({voice.language for voice in model.voices})
        # One G2P per accent: British voices use British spelling-to-sound rules.
        g2ps = {british: G2P(british=british) for british in {voice.british for voice in model.voices}}
        self._voices = {
            voice.name: Hibari(model=str(voice.file), threads=threads, g2p=g2ps[voice.british])
            for voice in model.voices
        }
        # hibari's G2P keeps per-call state; onnxruntime sessions may run concurrently, the G2P not.
        self._lock = threading.Lock()
        # G2P loads its lexicons on first use: do it now, so that the first request is not the slow one.
        for tts in self._voices.values():
            tts("Ready.")

    @property
    def voices(self) -> list[str]:
        return list(self._voices)

    def synthesize(self, text: str, voice: str, speed: float) -> np.ndarray:
        """Float32 samples in [-1, 1] at self.sample_rate; raises KeyError for an unknown voice."""
        tts = self._voices[voice]
        with self._lock:
            return np.asarray(tts(text, speed=speed), dtype=np.float32)
