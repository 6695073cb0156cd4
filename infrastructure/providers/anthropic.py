"""Anthropic's Messages API (`anthropic/`): chat, streamed chat, and text completions through chat."""
from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from moneta.application.config import Deployment
from moneta.application.ports import AudioFile
from moneta.domain import errors
from moneta.infrastructure.providers.http_errors import retry_after_seconds
from moneta.infrastructure.providers.openai_compatible import (
    DEFAULT_TIMEOUT_S,
    error_body,
    extra_headers,
    guarded_post,
    read_json,
    sse_data,
    stream_timeout,
)
from moneta.infrastructure.providers.params import apply_param_policy
from moneta.infrastructure.providers.translation.anthropic_request import (
    anthropic_request,
    wants_json_tool,
)
from moneta.infrastructure.providers.translation.anthropic_response import (
    StreamTranslator,
    openai_completion,
)
from moneta.infrastructure.providers.translation.text_completion import (
    text_completion_via_chat,
)

NAME = "anthropic"
DEFAULT_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"

_BY_TYPE: dict[str, type[errors.GatewayError]] = {
    "invalid_request_error": errors.BadRequestError,
    "authentication_error": errors.AuthenticationError,
    "permission_error": errors.PermissionDeniedError,
    "not_found_error": errors.NotFoundError,
    "request_too_large": errors.RequestTooLargeError,
    "rate_limit_error": errors.RateLimitError,
    "api_error": errors.InternalServerError,
    "overloaded_error": errors.ServiceUnavailableError,
}
_CONTEXT_WINDOW_HINTS = ("prompt is too long", "exceed context limit", "context window")


def anthropic_error(status: int | None, body: Any, headers: Mapping[str, str], model: str) -> errors.GatewayError:
    """Anthropic's `{"type": "error", "error": {"type", "message"}}`, by its type, else by status.

    Status 529 (overloaded) is Anthropic's own: callers get ServiceUnavailable's 503.
    """
    detail = body.get("error") if isinstance(body, dict) else None
    kind = detail.get("type") if isinstance(detail, dict) else None
    message = str(detail.get("message") if isinstance(detail, dict) else body or f"HTTP {status}")[:1000]
    cls = _BY_TYPE.get(str(kind)) or errors.error_for_status(status or 500)
    if cls is errors.BadRequestError and any(hint in message.lower() for hint in _CONTEXT_WINDOW_HINTS):
        cls = errors.ContextWindowExceededError
    return cls(f"{NAME} error: {message}", code=kind, provider=NAME, model=model,
               status_code=None if status in (None, 529) else status,
               retry_after=retry_after_seconds(headers), body=body)


class AnthropicProvider:
    name = NAME

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.fallback_api_key = environ.get("ANTHROPIC_API_KEY")
        self.default_base = environ.get("ANTHROPIC_API_BASE") or DEFAULT_BASE

    async def chat(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        payload = self._payload(deployment, body)
        timeout = aiohttp.ClientTimeout(total=deployment.timeout or DEFAULT_TIMEOUT_S)
        async with self._post(deployment, payload, timeout) as response:
            if response.status >= 400:
                raise await self._error(deployment, response)
            answer = await read_json(response, deployment, NAME)
        return openai_completion(answer, wants_json_tool(payload))

    async def chat_stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        payload = {**self._payload(deployment, body), "stream": True}
        translator = StreamTranslator(deployment.provider_model, wants_json_tool(payload))
        async with self._post(deployment, payload, stream_timeout(deployment)) as response:
            if response.status >= 400:
                raise await self._error(deployment, response)
            async for event in sse_data(response, deployment, NAME):
                if event.get("type") == "error":
                    raise anthropic_error(None, event, {}, deployment.provider_model)
                for chunk in translator.on_event(event):
                    yield chunk
                if translator.done:
                    return
        raise errors.APIConnectionError(f"{NAME} ended the stream before message_stop", provider=NAME,
                                        model=deployment.provider_model)

    async def text_completion(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await text_completion_via_chat(self.chat, deployment, body)

    async def embedding(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        raise self._unsupported(deployment, "embeddings")

    async def transcription(self, deployment: Deployment, audio: AudioFile, fields: dict[str, Any]) -> dict[str, Any]:
        raise self._unsupported(deployment, "audio transcription")

    def _payload(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return anthropic_request(apply_param_policy(NAME, deployment, body))

    def _post(self, deployment: Deployment, payload: dict[str, Any], timeout: aiohttp.ClientTimeout) -> Any:
        url = (deployment.api_base or self.default_base).rstrip("/") + "/v1/messages"
        return guarded_post(url, payload, self._headers(deployment), timeout, deployment, NAME)

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        key = deployment.api_key or self.fallback_api_key
        if not key:
            raise errors.AuthenticationError(f"no API key for {NAME} (set api_key or ANTHROPIC_API_KEY)",
                                             provider=NAME, model=deployment.provider_model)
        return {"x-api-key": key, "anthropic-version": API_VERSION, "content-type": "application/json",
                **extra_headers(deployment)}

    async def _error(self, deployment: Deployment, response: aiohttp.ClientResponse) -> errors.GatewayError:
        return anthropic_error(response.status, await error_body(response), response.headers,
                               deployment.provider_model)

    def _unsupported(self, deployment: Deployment, what: str) -> errors.BadRequestError:
        return errors.BadRequestError(f"{NAME} does not offer {what}", param="model", code="unsupported_endpoint",
                                      provider=NAME, model=deployment.provider_model)
