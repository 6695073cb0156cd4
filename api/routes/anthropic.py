"""Anthropic's Messages API on any provider: `POST /v1/messages` (JSON or SSE) and
`POST /v1/messages/count_tokens`, for the official `anthropic` SDK and its users.

Errors on these routes answer in Anthropic's shape, with the status the gateway decided.
Responses carry the ledger's request id in `request-id` (read by the SDK) and `x-request-id`.
"""
from __future__ import annotations

import math
import uuid
from typing import Any, Callable, Coroutine, Iterable

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from moneta.api.admission import admit, gateway
from moneta.api.auth import authenticate
from moneta.api.body import parse_json, read_body
from moneta.api.errors import public, request_id_of, unexpected
from moneta.api.responses import json_response
from moneta.api.sse import stream_response
from moneta.application import validation
from moneta.application.anthropic_messages import to_anthropic_message, to_openai_chat, validate_request
from moneta.application.anthropic_stream import AnthropicStream
from moneta.application.tokens import prompt_tokens
from moneta.domain.errors import GatewayError, ModelNotFoundError

CALL_TYPE = "anthropic_messages"
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
                504: "timeout_error", 529: "overloaded_error"}


class _AnthropicErrors(APIRoute):
    """Renders every error of these routes in Anthropic's shape instead of OpenAI's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except GatewayError as error:
                return _error_response(request, error)
            except Exception as error:  # noqa: BLE001 - the client still gets Anthropic's shape
                return _error_response(request, unexpected(error, request_id_of(request), _secrets(request)))

        return handle


router = APIRouter(route_class=_AnthropicErrors)


@router.post("/v1/messages")
async def messages(request: Request) -> Response:
    call = await admit(request, CALL_TYPE, _checked)
    message_id = f"msg_{call.request_id.hex}"
    model = call.body["model"]
    if call.call.get("stream"):
        chunks = await gateway(request).open_chat_stream(call.caller, call.call, call.request_id, call_type=CALL_TYPE)
        framing = _AnthropicFraming(AnthropicStream(message_id, model), str(call.request_id), _secrets(request))
        return stream_response(chunks, framing, _secrets(request), _ids(call.request_id))
    response = await gateway(request).chat(call.caller, call.call, call.request_id, call_type=CALL_TYPE)
    return json_response(to_anthropic_message(response, message_id, model), headers=_ids(call.request_id))


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> Response:
    await authenticate(request)
    body = parse_json(await read_body(request))
    model = validate_request(body, require_max_tokens=False)
    container = request.app.state.container
    deployment = next((d for d in container.config.deployments if d.model_name == model), None)
    if deployment is None:
        raise ModelNotFoundError(f"The model '{model}' does not exist or you do not have access to it.", param="model")
    total = prompt_tokens(container.tokenizer, deployment.provider_model, to_openai_chat(body))
    return json_response({"input_tokens": total})


def _checked(body: Any) -> dict[str, Any]:
    """The Messages request, validated and translated to the OpenAI chat the gateway makes."""
    validate_request(body)
    chat = to_openai_chat(body)
    validation.validate_chat(chat)
    return chat


class _AnthropicFraming:
    """Anthropic's named SSE events (`event: <type>`), re-told from the chat chunks."""

    def __init__(self, stream: AnthropicStream, request_id: str, secrets: tuple[str, ...]) -> None:
        self._stream = stream
        self._request_id = request_id
        self._secrets = secrets

    def start(self) -> Iterable[bytes]:
        return map(_event, self._stream.start())

    def chunk(self, chunk: dict[str, Any]) -> Iterable[bytes]:
        return map(_event, self._stream.on_chunk(chunk))

    def finish(self) -> Iterable[bytes]:
        return map(_event, self._stream.finish())

    def error(self, error: GatewayError) -> bytes:
        return _event(_anthropic_error(public(error, self._request_id, self._secrets), self._request_id))


def _event(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _anthropic_error(error: GatewayError, request_id: str | None = None) -> dict[str, Any]:
    status = error.status_code
    kind = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": error.message}}
    if request_id:
        body["request_id"] = request_id
    return body


def _error_response(request: Request, error: GatewayError) -> Response:
    request_id = request_id_of(request)
    error = public(error, request_id, _secrets(request))
    headers = _ids(request_id)
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
    return json_response(_anthropic_error(error, request_id), status_code=error.status_code, headers=headers)


def _ids(request_id: uuid.UUID | str) -> dict[str, str]:
    return {"request-id": str(request_id), "x-request-id": str(request_id)}


def _secrets(request: Request) -> tuple[str, ...]:
    return request.app.state.container.config.secrets()
