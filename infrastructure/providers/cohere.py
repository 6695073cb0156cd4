"""Cohere's v2 API (`cohere/` and `cohere_chat/`): chat, streamed chat, embeddings, and text
completions through chat.

Usage is Cohere's `billed_units` when present (what the invoice counts, so spend reconciles),
else its raw `tokens`.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from moneta.application.config import Deployment
from moneta.application.ports import AudioFile
from moneta.domain import errors
from moneta.infrastructure.providers.http_errors import retry_after_seconds
from moneta.infrastructure.providers.openai_compatible import (
    error_body,
    extra_headers,
    guarded_post,
    read_json,
    sse_data,
    stream_timeout,
)
from moneta.infrastructure.providers.translation.text_completion import (
    text_completion_via_chat,
)

DEFAULT_BASE = "https://api.cohere.com"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_EMBED_INPUT_TYPE = "search_document"


class CohereProvider:
    def __init__(self, name: str = "cohere", api_key_env_value: str | None = None) -> None:
        self.name = name
        self.fallback_api_key = api_key_env_value

    # -- the port --------------------------------------------------------------------------

    async def chat(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        data = await self._post_json(deployment, "/v2/chat", chat_request(body, stream=False))
        return chat_completion(data, body["model"], deployment, self.name)

    async def chat_stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        payload = chat_request(body, stream=True)
        async with self._request(deployment, "/v2/chat", payload, stream_timeout(deployment)) as response:
            if response.status >= 400:
                raise await self._error(deployment, response)
            stream = CohereStream(body["model"], deployment, self.name)
            async for event in sse_data(response, deployment, self.name):
                for chunk in stream.on_event(event):
                    yield chunk

    async def embedding(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        data = await self._post_json(deployment, "/v2/embed", embed_request(body))
        vectors = (data.get("embeddings") or {}).get("float") or []
        tokens = int(((data.get("meta") or {}).get("billed_units") or {}).get("input_tokens") or 0)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(vectors)],
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def text_completion(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await text_completion_via_chat(self.chat, deployment, body)

    async def transcription(self, deployment: Deployment, audio: AudioFile, fields: dict[str, Any]) -> dict[str, Any]:
        raise errors.BadRequestError(f"{self.name}: audio transcription is not supported",
                                     provider=self.name, model=deployment.provider_model)

    # -- HTTP ------------------------------------------------------------------------------

    def _request(self, deployment: Deployment, path: str, payload: dict[str, Any],
                 timeout: aiohttp.ClientTimeout) -> Any:
        headers = {"Content-Type": "application/json", **extra_headers(deployment)}
        key = deployment.api_key or self.fallback_api_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = (deployment.api_base or DEFAULT_BASE).rstrip("/") + path
        return guarded_post(url, payload, headers, timeout, deployment, self.name)

    async def _post_json(self, deployment: Deployment, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=deployment.timeout or DEFAULT_TIMEOUT_S)
        async with self._request(deployment, path, payload, timeout) as response:
            if response.status >= 400:
                raise await self._error(deployment, response)
            return await read_json(response, deployment, self.name)

    async def _error(self, deployment: Deployment, response: aiohttp.ClientResponse) -> errors.GatewayError:
        body = await error_body(response)
        return cohere_error(response.status, body, deployment, self.name, retry_after_seconds(response.headers))


# -- errors ------------------------------------------------------------------------------------

# Statuses whose meaning differs from the generic table; their class sets the status we answer.
_ERRORS_BY_STATUS: dict[int, type[errors.GatewayError]] = {
    402: errors.RateLimitError,  # out of credits: OpenAI calls this insufficient_quota, a 429
    498: errors.AuthenticationError,  # invalid token
    499: errors.APIConnectionError,  # request cancelled upstream; Cohere documents it as retryable
}


def cohere_error(status: int, body: Any, deployment: Deployment, provider: str,
                 retry_after: float | None = None) -> errors.GatewayError:
    message = str(body.get("message") or "") if isinstance(body, dict) else str(body or "")
    cls = _ERRORS_BY_STATUS.get(status)
    status_code = None if cls else status
    if cls is None:
        cls = errors.error_for_status(status)
    if status == 400 and message.lower().startswith("too many tokens"):
        cls = errors.ContextWindowExceededError
    return cls(f"{provider} error: {message or f'HTTP {status}'}", provider=provider,
               model=deployment.provider_model, status_code=status_code, retry_after=retry_after, body=body)


# -- OpenAI → Cohere ---------------------------------------------------------------------------

def chat_request(body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    if (body.get("n") or 1) > 1:
        raise errors.UnsupportedParamsError("cohere returns one choice per request; n must be 1", param="n")
    request: dict[str, Any] = {"model": body["model"], "messages": [_message(m) for m in body["messages"]],
                               "stream": stream}
    for openai_name, cohere_name in (("temperature", "temperature"), ("top_p", "p"), ("seed", "seed"),
                                     ("frequency_penalty", "frequency_penalty"),
                                     ("presence_penalty", "presence_penalty")):
        if body.get(openai_name) is not None:
            request[cohere_name] = body[openai_name]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        request["max_tokens"] = max_tokens
    if body.get("stop"):
        request["stop_sequences"] = [body["stop"]] if isinstance(body["stop"], str) else list(body["stop"])
    if body.get("tools"):
        request["tools"] = body["tools"]
    if body.get("tool_choice") is not None:
        _set_tool_choice(request, body["tool_choice"])
    if body.get("response_format"):
        _set_response_format(request, body["response_format"])
    return request


def _message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    if role in ("system", "developer"):
        return {"role": "system", "content": _text_of(message.get("content"))}
    if role == "user":
        return {"role": "user", "content": _user_content(message.get("content"))}
    if role == "assistant":
        return _assistant(message)
    if role == "tool":
        return {"role": "tool", "tool_call_id": message.get("tool_call_id"),
                "content": _text_of(message.get("content"))}
    raise errors.BadRequestError(f"cohere: message role {role!r} is not supported", param="messages")


def _assistant(message: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"role": "assistant"}
    text = _text_of(message.get("content"))
    if text:
        result["content"] = text
    if message.get("tool_calls"):
        result["tool_calls"] = [{"id": call.get("id"), "type": "function",
                                 "function": {"name": call["function"]["name"],
                                              "arguments": call["function"].get("arguments") or "{}"}}
                                for call in message["tool_calls"]]
    return result


def _user_content(content: Any) -> Any:
    if not isinstance(content, list):
        return str(content or "")
    parts = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append({"type": "image_url", "image_url": image if isinstance(image, dict) else {"url": image}})
        else:
            raise errors.UnsupportedParamsError(f"cohere: content part type {kind!r} is not supported",
                                                param="messages")
    return parts


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _set_tool_choice(request: dict[str, Any], choice: Any) -> None:
    if choice == "auto":
        return
    if choice in ("required", "none"):
        request["tool_choice"] = choice.upper()
        return
    raise errors.UnsupportedParamsError("cohere: tool_choice must be 'auto', 'required' or 'none'",
                                        param="tool_choice")


def _set_response_format(request: dict[str, Any], response_format: dict[str, Any]) -> None:
    kind = response_format.get("type")
    if kind == "json_object":
        request["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        request["response_format"] = {"type": "json_object", "json_schema": schema}
    elif kind != "text":
        raise errors.UnsupportedParamsError(f"cohere: response_format type {kind!r} is not supported",
                                            param="response_format")


def embed_request(body: dict[str, Any]) -> dict[str, Any]:
    texts = [body["input"]] if isinstance(body.get("input"), str) else body.get("input")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise errors.BadRequestError("cohere embeddings take `input` as a string or a list of strings",
                                     param="input")
    request = {"model": body["model"], "texts": texts,
               "input_type": body.get("input_type") or DEFAULT_EMBED_INPUT_TYPE, "embedding_types": ["float"]}
    if body.get("dimensions") is not None:
        request["output_dimension"] = body["dimensions"]
    return request


# -- Cohere → OpenAI ---------------------------------------------------------------------------

_FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}


def finish_reason(reason: str | None, deployment: Deployment, provider: str) -> str:
    """Cohere ends a failed generation with ERROR or TIMEOUT instead of an HTTP error: raise it,
    so that the router can retry and the ledger records a failure, not a completion."""
    if reason == "ERROR":
        raise errors.InternalServerError(f"{provider} error: the generation failed (finish_reason ERROR)",
                                         provider=provider, model=deployment.provider_model)
    if reason == "TIMEOUT":
        raise errors.TimeoutError(f"{provider} error: the generation timed out (finish_reason TIMEOUT)",
                                  provider=provider, model=deployment.provider_model)
    return _FINISH_REASONS.get(reason or "", "stop")


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    counted = usage.get("billed_units") or usage.get("tokens") or {}
    prompt = int(counted.get("input_tokens") or 0)
    completion = int(counted.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(data: dict[str, Any], model: str, deployment: Deployment, provider: str) -> dict[str, Any]:
    reply = data.get("message") or {}
    texts = [part.get("text", "") for part in reply.get("content") or [] if part.get("type") == "text"]
    thinking = [part.get("thinking", "") for part in reply.get("content") or [] if part.get("type") == "thinking"]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reply.get("tool_calls"):
        message["tool_calls"] = [{"id": call.get("id"), "type": "function",
                                  "function": {"name": call["function"]["name"],
                                               "arguments": call["function"].get("arguments") or "{}"}}
                                 for call in reply["tool_calls"]]
    elif message["content"] is None:
        message["content"] = ""
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    return {
        "id": data.get("id") or "",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": finish_reason(data.get("finish_reason"), deployment, provider),
                     "logprobs": None}],
        "usage": openai_usage(data.get("usage") or {}),
    }


class CohereStream:
    """Turns Cohere v2 stream events into `chat.completion.chunk` dicts."""

    def __init__(self, model: str, deployment: Deployment, provider: str) -> None:
        self.id = ""
        self.created = int(time.time())
        self.model = model
        self._deployment = deployment
        self._provider = provider

    def on_event(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        message = (event.get("delta") or {}).get("message") or {}
        if kind == "message-start":
            self.id = event.get("id") or self.id
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind in ("content-start", "content-delta"):
            return self._content(message.get("content") or {})
        if kind == "tool-call-start":
            call = message.get("tool_calls") or {}
            function = call.get("function") or {}
            return [self._chunk({"tool_calls": [{"index": event.get("index", 0), "id": call.get("id"),
                                                 "type": "function",
                                                 "function": {"name": function.get("name"),
                                                              "arguments": function.get("arguments") or ""}}]})]
        if kind == "tool-call-delta":
            arguments = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments") or ""
            return [self._chunk({"tool_calls": [{"index": event.get("index", 0),
                                                 "function": {"arguments": arguments}}]})]
        if kind == "message-end":
            return self._end(event.get("delta") or {})
        return []

    def _content(self, content: dict[str, Any]) -> list[dict[str, Any]]:
        if content.get("text"):
            return [self._chunk({"content": content["text"]})]
        if content.get("thinking"):
            return [self._chunk({"reasoning_content": content["thinking"]})]
        return []

    def _end(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        finish = finish_reason(delta.get("finish_reason"), self._deployment, self._provider)
        return [self._chunk({}, finish),
                {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [], "usage": openai_usage(delta.get("usage") or {})}]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
