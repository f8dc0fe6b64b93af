"""The OpenAI-compatible routes an engine may serve, by their path under /v1."""

from __future__ import annotations

from enum import Enum


class OpenAIRoute(str, Enum):
    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RERANK = "rerank"
    AUDIO_TRANSCRIPTIONS = "audio/transcriptions"
    AUDIO_TRANSLATIONS = "audio/translations"
    AUDIO_SPEECH = "audio/speech"
    IMAGES_GENERATIONS = "images/generations"
    IMAGES_EDITS = "images/edits"
    RESPONSES = "responses"

    @property
    def multipart(self) -> bool:
        """Whether clients send the body as multipart/form-data (an uploaded file) rather than JSON."""
        return self in _MULTIPART


_MULTIPART = frozenset(
    {OpenAIRoute.AUDIO_TRANSCRIPTIONS, OpenAIRoute.AUDIO_TRANSLATIONS, OpenAIRoute.IMAGES_EDITS}
)

TEXT_GENERATION = frozenset({OpenAIRoute.CHAT, OpenAIRoute.COMPLETIONS})
