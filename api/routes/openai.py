"""OpenAI's routes, with and without the `/v1` prefix."""
from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, Awaitable, Callable, cast

import orjson
from fastapi import Request, Response
from starlette.datastructures import FormData

from moneta.api.admission import Admitted, admit, checked, gateway, new_request_id, with_seen
from moneta.api.auth import authenticate
from moneta.api.body import check_declared_size
from moneta.api.errors import public
from moneta.api.plain_routes import PlainRoutes
from moneta.api.responses import json_response
from moneta.api.sse import OpenAIFraming, stream_response
from moneta.application import validation
from moneta.application.authorization import visible
from moneta.application.gateway import Caller, Gateway
from moneta.application.json_limits import refuse_nul
from moneta.application.ports import AudioFile
from moneta.domain.errors import BadRequestError, GatewayError

router = PlainRoutes()

_TRANSCRIPTION_FIELDS = ("model", "language", "prompt", "response_format", "temperature",
                         "timestamp_granularities[]")


def _json(payload: dict[str, Any], request_id: uuid.UUID) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers={"x-request-id": str(request_id)})


class _Framing(OpenAIFraming):
    """OpenAI's SSE framing; a 500 in mid-stream says no more than one before it."""

    def __init__(self, request_id: str, secrets: tuple[str, ...]) -> None:
        self._request_id = request_id
        self._secrets = secrets

    def error(self, error: GatewayError) -> bytes:
        return super().error(public(error, self._request_id, self._secrets))


def _checked(validate: Callable[[Any], str]) -> Callable[[Any], dict[str, Any]]:
    def check(body: Any) -> dict[str, Any]:
        validate(body)
        return body

    return check


def _caller(request: Request, call: Admitted) -> Caller:
    """The caller, with a cache hit's key to answer in LiteLLM's `x-litellm-cache-key` header."""
    if request.app.state.container.cache is None:
        return call.caller

    def tell(key: str) -> None:
        request.state.response_headers = [*getattr(request.state, "response_headers", ()),
                                          (b"x-litellm-cache-key", key.encode())]

    return replace(call.caller, on_cache_hit=tell)


async def _call(
    request: Request, call_type: str, validate: Callable[[Any], str],
    run: Callable[[Gateway, Caller, dict[str, Any], uuid.UUID], Awaitable[dict[str, Any]]],
) -> Response:
    call = await admit(request, call_type, _checked(validate))
    return _json(await run(gateway(request), _caller(request, call), call.call, call.request_id), call.request_id)


@router.post("/v1/chat/completions", "/chat/completions")
async def chat_completions(request: Request) -> Response:
    call = await admit(request, "chat", _checked(validation.validate_chat))
    if call.body.get("stream"):
        chunks = await gateway(request).open_chat_stream(_caller(request, call), call.call, call.request_id)
        secrets = request.app.state.container.config.secrets()
        return stream_response(chunks, _Framing(str(call.request_id), secrets), secrets,
                               {"x-request-id": str(call.request_id)})
    return _json(await gateway(request).chat(_caller(request, call), call.call, call.request_id), call.request_id)


@router.post("/v1/completions", "/completions")
async def completions(request: Request) -> Response:
    def validate(body: Any) -> str:
        model = validation.validate_text_completion(body)
        if body.get("stream"):
            raise BadRequestError("stream=true is not supported on /v1/completions; use /v1/chat/completions.",
                                  param="stream", code="unsupported_parameter")
        return model

    return await _call(request, "text_completion", validate,
                       lambda gw, caller, body, rid: gw.text_completion(caller, body, rid))


@router.post("/v1/embeddings", "/embeddings")
async def embeddings(request: Request) -> Response:
    return await _call(request, "embedding", validation.validate_embedding,
                       lambda gw, caller, body, rid: gw.embedding(caller, body, rid))


@router.post("/v1/audio/transcriptions", "/audio/transcriptions")
async def transcriptions(request: Request) -> Response:
    caller = await authenticate(request)
    request_id = new_request_id(request)
    check_declared_size(request)
    form = await request.form(max_part_size=request.app.state.container.config.max_request_body_bytes)
    model = ""
    seen: dict[str, Any] = {}
    try:
        fields = _transcription_fields(form)
        model = fields.pop("model")
        audio = await _audio_file(form)
        caller, call = await checked(request, caller, {"model": model}, request_id, "transcription", seen,
                                     audio_bytes=len(audio.content))
        model = call["model"]
    except GatewayError as error:
        await gateway(request).deny(with_seen(caller, seen), "transcription", model, error, request_id)
        raise
    result = await gateway(request).transcription(caller, model, audio, fields, request_id)
    if fields.get("response_format") in ("text", "srt", "vtt"):
        return Response(result["text"], media_type="text/plain", headers={"x-request-id": str(request_id)})
    return _json(result, request_id)


def _transcription_fields(form: FormData) -> dict[str, str]:
    """The form's text fields the call takes (the first value of each), checked."""
    fields = {name: value for name in _TRANSCRIPTION_FIELDS if (value := form.get(name)) is not None}
    refuse_nul(fields)
    validation.validate_transcription(fields)
    return cast(dict[str, str], fields)  # validated: every value is text


async def _audio_file(form: FormData) -> AudioFile:
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise BadRequestError("'file' is required: the audio file, as multipart form data.", param="file")
    refuse_nul({"file": upload.filename or ""})
    return AudioFile(upload.filename or "audio", await upload.read(), upload.content_type or "application/octet-stream")


@router.get("/v1/models", "/models")
async def models(request: Request) -> Response:
    await authenticate(request)
    created = int(request.app.state.started_at)
    names = visible(request.state.principal, request.app.state.container.gateway.router.model_names())
    data = [{"id": name, "object": "model", "created": created, "owned_by": "moneta"} for name in names]
    return json_response({"object": "list", "data": data})
