"""Ollama's native API (`ollama/` and `ollama_chat/`): `/api/chat` (also serving text completions)
and `/api/embed`.

Ollama's OpenAI-compatible `/v1` is served by the `openai/` adapter with an api_base instead.
"""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from moneta.application.config import Deployment
from moneta.application.ports import AudioFile
from moneta.domain import errors
from moneta.infrastructure.providers.http_errors import error_from_response
from moneta.infrastructure.providers.openai_compatible import (
    DEFAULT_TIMEOUT_S,
    error_body,
    extra_headers,
    guarded_post,
    json_lines,
    read_json,
    stream_timeout,
)
from moneta.infrastructure.providers.params import apply_param_policy
from moneta.infrastructure.providers.translation.ollama_chat import (
    StreamTranslator,
    ollama_request,
    openai_completion,
)
from moneta.infrastructure.providers.translation.text_completion import (
    text_completion_via_chat,
)

DEFAULT_BASE = "http://localhost:11434"


class OllamaProvider:
    def __init__(self, name: str, environ: Mapping[str, str]) -> None:
        self.name = name
        self.default_base = environ.get("OLLAMA_API_BASE") or DEFAULT_BASE
        self.fallback_api_key = environ.get("OLLAMA_API_KEY")

    async def chat(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        payload = ollama_request(apply_param_policy(self.name, deployment, body), stream=False)
        answer = await self._post_json(deployment, "/api/chat", payload)
        return openai_completion(answer, _response_id())

    async def chat_stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        payload = ollama_request(apply_param_policy(self.name, deployment, body), stream=True)
        translator = StreamTranslator(_response_id(), deployment.provider_model)
        async with self._post(deployment, "/api/chat", payload, stream_timeout(deployment)) as response:
            if response.status >= 400:
                raise await self._error(deployment, response)
            async for line in self._lines(response, deployment):
                for chunk in translator.on_line(line):
                    yield chunk
                if translator.done:
                    return
        raise errors.APIConnectionError(f"{self.name} ended the stream before done", provider=self.name,
                                        model=deployment.provider_model)

    async def embedding(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        payload = {"model": deployment.provider_model, "input": body.get("input")}
        if body.get("dimensions"):
            payload["dimensions"] = body["dimensions"]
        answer = await self._post_json(deployment, "/api/embed", payload)
        data = [{"object": "embedding", "index": i, "embedding": vector}
                for i, vector in enumerate(answer.get("embeddings") or ())]
        prompt_tokens = answer.get("prompt_eval_count") or 0
        return {"object": "list", "data": data, "model": deployment.provider_model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}

    async def text_completion(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await text_completion_via_chat(self.chat, deployment, body)

    async def transcription(self, deployment: Deployment, audio: AudioFile, fields: dict[str, Any]) -> dict[str, Any]:
        raise self._unsupported(deployment, "audio transcription")

    def _post(self, deployment: Deployment, path: str, payload: dict[str, Any],
              timeout: aiohttp.ClientTimeout) -> Any:
        url = (deployment.api_base or self.default_base).rstrip("/") + path
        headers = {"Content-Type": "application/json", **extra_headers(deployment)}
        key = deployment.api_key or self.fallback_api_key
        if key:  # a bare Ollama has no auth; one behind a proxy may want a bearer token
            headers["Authorization"] = f"Bearer {key}"
        return guarded_post(url, payload, headers, timeout, deployment, self.name)

    async def _post_json(self, deployment: Deployment, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=deployment.timeout or DEFAULT_TIMEOUT_S)
        async with self._post(deployment, path, payload, timeout) as response:
            if response.status >= 400:
                raise await self._error(deployment, response)
            return await read_json(response, deployment, self.name)

    async def _lines(self, response: aiohttp.ClientResponse, deployment: Deployment) -> AsyncIterator[dict[str, Any]]:
        async for line in json_lines(response, deployment, self.name):
            if "error" in line:
                raise error_from_response(500, line, {}, provider=self.name, model=deployment.provider_model)
            yield line

    async def _error(self, deployment: Deployment, response: aiohttp.ClientResponse) -> errors.GatewayError:
        return error_from_response(response.status, await error_body(response), response.headers,
                                   provider=self.name, model=deployment.provider_model)

    def _unsupported(self, deployment: Deployment, what: str) -> errors.BadRequestError:
        return errors.BadRequestError(f"{self.name} does not offer {what} through Moneta", param="model",
                                      code="unsupported_endpoint", provider=self.name, model=deployment.provider_model)


def _response_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
