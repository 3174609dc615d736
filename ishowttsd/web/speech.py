"""OpenAI-compatible speech: `POST /v1/audio/speech` (and `GET /v1/models` for clients that ask).

Tools that speak OpenAI's speech API (chat front ends, home assistants, VTuber tools) use the
daemon as their TTS: base URL ``http://127.0.0.1:8765/v1``, API key = the web token. The body
is OpenAI's: ``model`` (any; the daemon's engine speaks), ``input``, ``voice`` (a voice id of
the daemon; OpenAI's own names mean the default voice), ``response_format`` (``wav``, ``pcm``
= 24 kHz 16-bit mono, ``mp3``, ``opus``, ``flac``) and ``speed``. It runs through the
`synthesize` verb: behind the stream's higher classes, bounded by `[web] speech_*`.
"""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ishowttsd.api import ApiError, validation_message
from ishowttsd.control import parse_json
from ishowttsd.web.http import JSON_LIMIT, STATUS, json_response, read_body
from ishowttsd.web.http import JSON_LIMIT, STATUS, json_response, read_body

# OpenAI's built-in voices: a client that sends one gets the daemon's default voice
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar"}
MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


class SpeechRequest(BaseModel):
    """OpenAI's request body; unknown keys are refused so that a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str = Field(default="tts-1", max_length=200)
    input: str = Field(min_length=1, max_length=1_000_000)
    voice: str = Field(default="alloy", max_length=200)
    response_format: Literal["wav", "pcm", "mp3", "opus", "flac", "aac"] = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(default=None, max_length=10_000)  # accepted; the engines take no prompt
    stream_format: Literal["audio", "sse"] = "audio"


def _openai_error(e: ApiError) -> Response:
    """The API's error with OpenAI's `type` and `param` added (clients read error.message)."""
    status = STATUS.get(e.code, 500)
    body = {"error": {"message": e.message, "type": "invalid_request_error" if status < 500 else "server_error",
                      "param": None, "code": e.code}}  # fmt: skip
    return json_response(body, status, {"Retry-After": str(max(1, round(e.retry_after)))} if e.retry_after else None)


def speech_routes(routes) -> list[Route]:
    """The /v1 routes over the app's `Routes` (its API, its admin check)."""
    api = routes.api

    async def speech(request: Request) -> Response:
        try:
            routes.admin(request)
            body = await read_body(request, max(JSON_LIMIT, routes.cfg.speech_max_chars * 4 + 4096))
            try:
                raw = parse_json(body)
            except (ValueError, RecursionError):
                raise ApiError("parse_error", "the body is not valid JSON") from None
            if not isinstance(raw, dict):
                raise ApiError("invalid_request", 'send {"model": "tts-1", "input": "...", "voice": "..."}')
            try:
                req = SpeechRequest.model_validate(raw)
            except ValidationError as e:
                raise ApiError("invalid_params", validation_message(e)) from None
            if req.response_format == "aac":
                raise ApiError("invalid_params", "response_format: aac has no encoder here; use mp3, opus, flac, wav or pcm")
            if req.stream_format == "sse":
                raise ApiError("invalid_params", "stream_format: sse is not offered; use audio")
            voice = None if req.voice.lower() in OPENAI_VOICES else req.voice
            options = {"speed": req.speed} if req.speed != 1.0 else {}
            r = await api.call("synthesize", {"text": req.input, "voice": voice, "format": req.response_format,
                                              "options": options})  # fmt: skip
        except ApiError as e:
            return _openai_error(e)
        headers = {"X-Audio-Seconds": str(r["audio_s"]), "X-Synthesis-Seconds": str(r["synth_s"]),
                   "X-Waited-Seconds": str(r["waited_s"]), "X-Sample-Rate": str(r["sample_rate"])}  # fmt: skip
        return Response(base64.b64decode(r["audio_b64"]), media_type=r["content_type"], headers=headers)

    async def models(request: Request) -> Response:
        try:
            routes.admin(request)
        except ApiError as e:
            return _openai_error(e)
        return json_response({"object": "list", "data": [{"id": m, "object": "model", "owned_by": "ishowttsd"} for m in MODELS]})

    return [Route("/v1/audio/speech", speech, methods=["POST"]), Route("/v1/models", models)]
