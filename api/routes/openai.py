"""OpenAI's routes, with and without the `/v1` prefix."""
from __future__ import annotations

import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from moneta.api.auth import authenticate
from moneta.api.body import check_declared_size, parse_json, read_body
from moneta.api.responses import json_response
from moneta.application import validation
from moneta.application.gateway import Caller, Gateway
from moneta.application.ports import AudioFile
from moneta.domain.errors import BadRequestError, GatewayError

router = APIRouter()

_TRANSCRIPTION_FIELDS = ("language", "prompt", "response_format", "temperature", "timestamp_granularities[]")


def _gateway(request: Request) -> Gateway:
    return request.app.state.container.gateway


def _new_request_id(request: Request) -> uuid.UUID:
    request_id = uuid.uuid4()
    request.state.request_id = str(request_id)
    return request_id


async def _admitted_body(
    request: Request, call_type: str, validate: Callable[[Any], str]
) -> tuple[Caller, dict[str, Any], uuid.UUID]:
    """Authenticates, reads and validates; a refusal of an authenticated caller is recorded."""
    caller = authenticate(request)
    request_id = _new_request_id(request)
    body: dict[str, Any] = {}
    try:
        body = parse_json(await read_body(request))
        validate(body)
    except GatewayError as error:
        model = body.get("model") if isinstance(body.get("model"), str) else ""
        await _gateway(request).deny(caller, call_type, model, error, request_id)
        raise
    if body.get("user") and not caller.end_user:
        caller = Caller(key_hash=caller.key_hash, end_user=str(body["user"]))
    return caller, body, request_id


def _json(payload: dict[str, Any], request_id: uuid.UUID) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers={"x-request-id": str(request_id)})


async def _call(
    request: Request, call_type: str, validate: Callable[[Any], str],
    run: Callable[[Gateway, Caller, dict[str, Any], uuid.UUID], Awaitable[dict[str, Any]]],
) -> Response:
    caller, body, request_id = await _admitted_body(request, call_type, validate)
    return _json(await run(_gateway(request), caller, body, request_id), request_id)


@router.post("/v1/chat/completions")
@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    caller, body, request_id = await _admitted_body(request, "chat", validation.validate_chat)
    gateway = _gateway(request)
    if body.get("stream"):
        chunks = await gateway.open_chat_stream(caller, body, request_id)
        return StreamingResponse(_sse(chunks), media_type="text/event-stream",
                                 headers={"x-request-id": str(request_id), "cache-control": "no-cache"})
    return _json(await gateway.chat(caller, body, request_id), request_id)


@router.post("/v1/completions")
@router.post("/completions")
async def completions(request: Request) -> Response:
    def validate(body: Any) -> str:
        model = validation.validate_text_completion(body)
        if body.get("stream"):
            raise BadRequestError("stream=true is not supported on /v1/completions; use /v1/chat/completions.",
                                  param="stream", code="unsupported_parameter")
        return model

    return await _call(request, "text_completion", validate,
                       lambda gateway, caller, body, rid: gateway.text_completion(caller, body, rid))


@router.post("/v1/embeddings")
@router.post("/embeddings")
async def embeddings(request: Request) -> Response:
    return await _call(request, "embedding", validation.validate_embedding,
                       lambda gateway, caller, body, rid: gateway.embedding(caller, body, rid))


@router.post("/v1/audio/transcriptions")
@router.post("/audio/transcriptions")
async def transcriptions(request: Request) -> Response:
    caller = authenticate(request)
    request_id = _new_request_id(request)
    check_declared_size(request)
    form = await request.form(max_part_size=request.app.state.container.config.max_request_body_bytes)
    model, upload = form.get("model"), form.get("file")
    if not isinstance(model, str) or not model:
        error = BadRequestError("'model' is required.", param="model")
        await _gateway(request).deny(caller, "transcription", "", error, request_id)
        raise error
    if upload is None or isinstance(upload, str):
        error = BadRequestError("'file' is required: the audio file, as multipart form data.", param="file")
        await _gateway(request).deny(caller, "transcription", model, error, request_id)
        raise error
    audio = AudioFile(upload.filename or "audio", await upload.read(), upload.content_type or "application/octet-stream")
    fields = {k: v for k in _TRANSCRIPTION_FIELDS if isinstance(v := form.get(k), str)}
    result = await _gateway(request).transcription(caller, model, audio, fields, request_id)
    if fields.get("response_format") in ("text", "srt", "vtt"):
        return Response(result["text"], media_type="text/plain", headers={"x-request-id": str(request_id)})
    return _json(result, request_id)


@router.get("/v1/models")
@router.get("/models")
async def models(request: Request) -> Response:
    authenticate(request)
    created = int(request.app.state.started_at)
    data = [{"id": name, "object": "model", "created": created, "owned_by": "moneta"}
            for name in request.app.state.container.config.model_names()]
    return json_response({"object": "list", "data": data})


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except GatewayError as error:
        # Headers are gone already: report in-band, as OpenAI does.
        yield b"data: " + orjson.dumps(error.to_openai()) + b"\n\n"
    else:
        yield b"data: [DONE]\n\n"
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
