"""Any OpenAI-compatible API (`openai/` and friends): the body passes through as it is."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator
from urllib.parse import urlencode

import aiohttp
import orjson

from moneta.application.config import Deployment
from moneta.application.ports import AudioFile
from moneta.domain import errors
from moneta.infrastructure.http_session import session
from moneta.infrastructure.providers.http_errors import error_from_response

DEFAULT_TIMEOUT_S = 600.0


class OpenAICompatibleProvider:
    def __init__(self, name: str = "openai", default_base: str | None = "https://api.openai.com/v1",
                 api_key_env_value: str | None = None) -> None:
        self.name = name
        self.default_base = default_base
        self.fallback_api_key = api_key_env_value

    # -- the port --------------------------------------------------------------------------

    async def chat(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post_json(deployment, "/chat/completions", {**body, "stream": False})

    async def text_completion(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post_json(deployment, "/completions", {**body, "stream": False})

    async def embedding(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post_json(deployment, "/embeddings", body)

    async def chat_stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        options = {**(body.get("stream_options") or {}), "include_usage": True}
        payload = {**body, "stream": True, "stream_options": options}
        timeout = stream_timeout(deployment)
        async with await self._request(deployment, "/chat/completions", payload, timeout) as response:
            if response.status >= 400:
                raise await self._error(deployment, response)
            async for chunk in _sse_events(response, deployment, self.name):
                yield chunk

    async def transcription(self, deployment: Deployment, audio: AudioFile, fields: dict[str, Any]) -> dict[str, Any]:
        wanted = fields.get("response_format") or "json"
        upstream_fields = {**fields, "model": deployment.provider_model}
        if wanted == "json":
            upstream_fields["response_format"] = "verbose_json"  # it carries the duration we bill
        form = aiohttp.FormData()
        for name, value in upstream_fields.items():
            form.add_field(name, str(value))
        form.add_field("file", audio.content, filename=audio.filename, content_type=audio.content_type)
        try:
            async with session().post(
                self._url(deployment, "/audio/transcriptions"),
                data=form,
                headers=await self._headers(deployment, json_body=False),
                timeout=self._timeout(deployment),
            ) as response:
                if response.status >= 400:
                    raise await self._error(deployment, response)
                if wanted in ("text", "srt", "vtt"):
                    return {"text": await response.text(), "response_format": wanted}
                result = orjson.loads(await response.read())
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(exc, deployment, self.name) from None
        if wanted == "json":
            return {"text": result.get("text", ""), "usage": result.get("usage"), "duration": result.get("duration")}
        return result

    async def realtime_target(self, deployment: Deployment) -> tuple[str, dict[str, str]]:
        """The URL and headers of the deployment's Realtime API WebSocket."""
        url = f"{self._url(deployment, '/realtime')}?{urlencode({'model': deployment.provider_model})}"
        return url, await self._headers(deployment, json_body=False)

    # -- HTTP ------------------------------------------------------------------------------

    def _url(self, deployment: Deployment, path: str) -> str:
        base = deployment.api_base or self.default_base
        if not base:
            raise errors.BadRequestError(f"{self.name} deployments need an api_base", param="api_base",
                                         provider=self.name, model=deployment.provider_model)
        return base.rstrip("/") + path

    async def _headers(self, deployment: Deployment, json_body: bool = True) -> dict[str, str]:
        headers = {"Content-Type": "application/json"} if json_body else {}
        key = deployment.api_key or self.fallback_api_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        organization = deployment.extra_params.get("organization")
        if organization:
            headers["OpenAI-Organization"] = str(organization)
        headers.update(extra_headers(deployment))
        return headers

    @staticmethod
    def _timeout(deployment: Deployment) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=deployment.timeout or DEFAULT_TIMEOUT_S)

    async def _request(self, deployment: Deployment, path: str, payload: dict[str, Any],
                       timeout: aiohttp.ClientTimeout) -> _Guarded:
        url = self._url(deployment, path)
        return guarded_post(url, payload, await self._headers(deployment), timeout, deployment, self.name)

    async def _post_json(self, deployment: Deployment, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        async with await self._request(deployment, path, payload, self._timeout(deployment)) as response:
            if response.status >= 400:
                raise await self._error(deployment, response)
            return await read_json(response, deployment, self.name)

    async def _error(self, deployment: Deployment, response: aiohttp.ClientResponse) -> errors.GatewayError:
        return error_from_response(response.status, await error_body(response), response.headers,
                                   provider=self.name, model=deployment.provider_model)


def extra_headers(deployment: Deployment) -> dict[str, str]:
    """`extra_headers` (or LiteLLM's older `headers`) from the deployment's litellm_params."""
    configured = deployment.extra_params.get("extra_headers") or deployment.extra_params.get("headers") or {}
    return {str(k): str(v) for k, v in configured.items()} if isinstance(configured, dict) else {}


def guarded_post(url: str, payload: dict[str, Any], headers: dict[str, str], timeout: aiohttp.ClientTimeout,
                 deployment: Deployment, provider: str) -> _Guarded:
    """A JSON POST to use with `async with`; transport failures come out as gateway errors."""
    return _Guarded(session().post(url, data=orjson.dumps(payload), headers=headers, timeout=timeout),
                    deployment, provider)


async def read_json(response: aiohttp.ClientResponse, deployment: Deployment, provider: str) -> Any:
    try:
        return orjson.loads(await response.read())
    except orjson.JSONDecodeError:
        raise errors.InternalServerError(
            f"{provider} returned a response that is not JSON", provider=provider,
            model=deployment.provider_model, status_code=502,
        ) from None


async def error_body(response: aiohttp.ClientResponse) -> Any:
    """An error response's body: its JSON when it is JSON, else the start of its text."""
    raw = await response.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")[:2000]


class _Guarded:
    """`async with` around an aiohttp request that turns transport failures into gateway errors."""

    def __init__(self, request: Any, deployment: Deployment, provider: str) -> None:
        self._request = request
        self._deployment = deployment
        self._provider = provider

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            return await self._request.__aenter__()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(exc, self._deployment, self._provider) from None

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._request.__aexit__(*exc_info)
        exc = exc_info[1]
        if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError)):
            raise _transport_error(exc, self._deployment, self._provider) from None


def _transport_error(exc: BaseException, deployment: Deployment, provider: str) -> errors.GatewayError:
    if isinstance(exc, asyncio.TimeoutError):
        return errors.TimeoutError(f"{provider} did not answer in time", provider=provider,
                                   model=deployment.provider_model)
    return errors.APIConnectionError(f"could not reach {provider}: {type(exc).__name__}", provider=provider,
                                     model=deployment.provider_model)


def stream_timeout(deployment: Deployment) -> aiohttp.ClientTimeout:
    """No total limit on a stream, only on the wait for each read."""
    return aiohttp.ClientTimeout(
        total=None, sock_connect=30, sock_read=deployment.stream_timeout or deployment.timeout or DEFAULT_TIMEOUT_S
    )


async def sse_data(response: aiohttp.ClientResponse, deployment: Deployment, provider: str) -> AsyncIterator[Any]:
    """The decoded JSON of each SSE `data:` line, up to `[DONE]` or the end of the body."""
    try:
        async for raw_line in response.content:
            line = raw_line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            yield orjson.loads(data)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise _transport_error(exc, deployment, provider) from None


async def json_lines(response: aiohttp.ClientResponse, deployment: Deployment, provider: str) -> AsyncIterator[Any]:
    """The decoded JSON of each non-empty line of an NDJSON body."""
    try:
        async for raw_line in response.content:
            if raw_line.strip():
                yield orjson.loads(raw_line)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise _transport_error(exc, deployment, provider) from None


async def _sse_events(response: aiohttp.ClientResponse, deployment: Deployment,
                      provider: str) -> AsyncIterator[dict[str, Any]]:
    async for event in sse_data(response, deployment, provider):
        if isinstance(event, dict) and "error" in event and "choices" not in event:
            raise error_from_response(500, event, {}, provider=provider, model=deployment.provider_model)
        yield event

