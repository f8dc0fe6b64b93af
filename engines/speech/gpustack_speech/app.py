"""The HTTP side of a text-to-speech model: OpenAI's /v1/audio/speech plus vox-box's info routes."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gpustack_speech.audio import encode
from gpustack_speech.tts import MAX_SPEED, MIN_SPEED, HibariSpeech

MAX_INPUT_CHARS = 4096  # OpenAI's limit for /v1/audio/speech


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = ""
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    voice: str
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = 1.0
    instructions: str | None = None
    stream_format: Literal["audio", "sse"] = "audio"


def error(status: int, message: str, param: str | None = None) -> JSONResponse:
    """OpenAI's error body, so that the openai client raises with this message."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": param, "code": None}},
    )


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    problems = []
    param = None
    for item in exc.errors():
        loc = [str(part) for part in item.get("loc", ()) if part != "body"]
        where = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(problems), param


def create_app(engine: HibariSpeech, model_id: str) -> FastAPI:
    app = FastAPI(title="gpustack-speech", docs_url=None, redoc_url=None)
    created = int(time.time())

    def model_card() -> dict[str, Any]:
        return {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "gpustack-speech",
            "task_type": "tts",
            "backend_framework": "hibari",
            "voices": engine.voices,
            "languages": engine.languages,
        }

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        return error(400, f"invalid request: {message}", param)

    @app.get("/health")
    async def health() -> dict[str, str]:
        # The server listens only once every voice is loaded, so answering means ready.
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> Any:
        if name != model_id:
            return error(404, f"model {name!r} is not served here; this engine serves {model_id!r}", "model")
        return model_card()

    @app.get("/v1/voices")
    async def voices() -> dict[str, list[str]]:
        return {"voices": engine.voices}

    @app.get("/v1/languages")
    async def languages() -> dict[str, list[str]]:
        return {"languages": engine.languages}

    @app.post("/v1/audio/speech")
    async def speech(body: SpeechRequest) -> Response:
        if body.voice not in engine.voices:
            return error(
                400,
                f"voice {body.voice!r} is not one of this model's voices ({', '.join(engine.voices)}); "
                "GET /v1/voices lists them",
                "voice",
            )
        if not MIN_SPEED <= body.speed <= MAX_SPEED:
            return error(400, f"speed must be between {MIN_SPEED} and {MAX_SPEED} for this model", "speed")
        if body.stream_format != "audio":
            return error(400, "stream_format 'sse' is not supported; use 'audio'", "stream_format")
        if not body.input.strip():
            return error(400, "input is blank; give the text to speak", "input")
        samples = await run_in_threadpool(engine.synthesize, body.input, body.voice, body.speed)
        if samples.size == 0:
            return error(400, "input has nothing this model can pronounce", "input")
        data, media_type = await run_in_threadpool(encode, samples, engine.sample_rate, body.response_format)
        return Response(content=data, media_type=media_type)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions() -> JSONResponse:
        return error(
            400,
            f"{model_id} is a text-to-speech model: it serves /v1/audio/speech, not transcriptions; "
            "deploy a speech-to-text model (e.g. faster-whisper) for /v1/audio/transcriptions",
        )

    return app
