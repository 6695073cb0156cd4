"""AWS Bedrock: chat (and text completions through chat) on the Converse API (`bedrock/<modelId>`,
`bedrock/converse/<modelId>`) and embeddings through InvokeModel (`bedrock_embeddings`).

Requests are signed with SigV4 by botocore. Credentials come from the deployment's
`aws_access_key_id` / `aws_secret_access_key` / `aws_session_token`, else botocore's default
chain (environment, profile `aws_profile_name`, SSO, instance role); the region from
`aws_region_name`, else botocore's configured region. `api_base` replaces the endpoint.
"""
from __future__ import annotations

import asyncio
import functools
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import botocore.session
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import (
    Credentials,
    ReadOnlyCredentials,
    RefreshableCredentials,
)
from yarl import URL

from moneta.application.config import Deployment
from moneta.application.ports import AudioFile
from moneta.domain import errors
from moneta.infrastructure.http_session import session
from moneta.infrastructure.providers.bedrock_embeddings import bedrock_embedding
from moneta.infrastructure.providers.bedrock_eventstream import (
    EventMessage,
    EventStreamDecoder,
    EventStreamError,
)
from moneta.infrastructure.providers.http_errors import retry_after_seconds
from moneta.infrastructure.providers.openai_compatible import _Guarded, stream_timeout
from moneta.infrastructure.providers.translation.text_completion import (
    text_completion_via_chat,
)

PROVIDER = "bedrock"
SIGNING_SERVICE = "bedrock"
DEFAULT_REGION = "us-east-1"
DEFAULT_TIMEOUT_S = 600.0
EVENT_STREAM = "application/vnd.amazon.eventstream"


class BedrockProvider:
    name = PROVIDER

    def __init__(self) -> None:
        self._default_chain: dict[str | None, Credentials | None] = {}

    # -- the port --------------------------------------------------------------------------

    async def chat(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        model_id = converse_model_id(body["model"])
        path = f"/model/{quote(model_id, safe='')}/converse"
        async with await self._post(deployment, path, converse_request(body), "application/json",
                                    _timeout(deployment)) as response:
            data = await _json_or_raise(response, deployment)
            request_id = response.headers.get("x-amzn-RequestId")
        return chat_completion(data, model_id, request_id)

    async def chat_stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        model_id = converse_model_id(body["model"])
        path = f"/model/{quote(model_id, safe='')}/converse-stream"
        payload = converse_request(body)
        async with await self._post(deployment, path, payload, EVENT_STREAM, stream_timeout(deployment)) as response:
            if response.status >= 400:
                await _json_or_raise(response, deployment)
            stream = ConverseStream(model_id, response.headers.get("x-amzn-RequestId"))
            async for message in _event_messages(response, deployment):
                chunk = stream.on_message(message, deployment)
                if chunk is not None:
                    yield chunk

    async def embedding(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await bedrock_embedding(self, deployment, body)

    async def text_completion(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await text_completion_via_chat(self.chat, deployment, body)

    async def transcription(self, deployment: Deployment, audio: AudioFile, fields: dict[str, Any]) -> dict[str, Any]:
        raise errors.BadRequestError("bedrock: audio transcription is not supported",
                                     provider=PROVIDER, model=deployment.provider_model)

    async def invoke(self, deployment: Deployment, model_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """InvokeModel with a model-native JSON body (used for embeddings)."""
        path = f"/model/{quote(model_id, safe='')}/invoke"
        async with await self._post(deployment, path, payload, "application/json", _timeout(deployment)) as response:
            return await _json_or_raise(response, deployment)

    # -- signed HTTP -----------------------------------------------------------------------

    async def _post(self, deployment: Deployment, path: str, payload: dict[str, Any], accept: str,
                    timeout: aiohttp.ClientTimeout) -> _Guarded:
        region = str(deployment.extra_params.get("aws_region_name") or _configured_region())
        url = (deployment.api_base or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/") + path
        data = orjson.dumps(payload)
        credentials = await self._credentials(deployment)
        headers = sign(credentials, region, url, data, {"Content-Type": "application/json", "Accept": accept})
        # encoded=True: the signature covers the path exactly as quoted here (`:` as %3A).
        request = session().post(URL(url, encoded=True), data=data, headers=headers, timeout=timeout)
        return _Guarded(request, deployment, PROVIDER)

    async def _credentials(self, deployment: Deployment) -> ReadOnlyCredentials:
        params = deployment.extra_params
        if params.get("aws_access_key_id") and params.get("aws_secret_access_key"):
            return ReadOnlyCredentials(str(params["aws_access_key_id"]), str(params["aws_secret_access_key"]),
                                       params.get("aws_session_token"))
        profile = params.get("aws_profile_name")
        if profile not in self._default_chain:
            # The chain may read files or call the instance metadata service: keep it off the loop.
            self._default_chain[profile] = await asyncio.to_thread(_credential_chain, profile)
        found = self._default_chain[profile]
        if found is None:
            raise errors.AuthenticationError(
                "bedrock: no AWS credentials; set aws_access_key_id and aws_secret_access_key "
                "or configure the AWS default credential chain",
                provider=PROVIDER, model=deployment.provider_model,
            )
        if isinstance(found, RefreshableCredentials) and found.refresh_needed():
            return await asyncio.to_thread(found.get_frozen_credentials)
        return found.get_frozen_credentials()


def sign(credentials: ReadOnlyCredentials, region: str, url: str, data: bytes,
         headers: dict[str, str]) -> dict[str, str]:
    """The headers to send: `headers` plus X-Amz-Date, the session token and Authorization."""
    request = AWSRequest(method="POST", url=url, data=data, headers=headers)
    SigV4Auth(credentials, SIGNING_SERVICE, region).add_auth(request)
    return dict(request.headers.items())


def _credential_chain(profile: str | None) -> Credentials | None:
    return botocore.session.Session(profile=profile).get_credentials()


@functools.cache
def _configured_region() -> str:
    return botocore.session.Session().get_config_variable("region") or DEFAULT_REGION


def _timeout(deployment: Deployment) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=deployment.timeout or DEFAULT_TIMEOUT_S)


async def _json_or_raise(response: aiohttp.ClientResponse, deployment: Deployment) -> dict[str, Any]:
    raw = await response.read()
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        data = None
    if response.status >= 400:
        error_type = response.headers.get("x-amzn-ErrorType") or (data.get("__type") if isinstance(data, dict) else None)
        body = raw.decode("utf-8", "replace")[:1000] if data is None else data
        raise bedrock_error(error_type, body, deployment, status=response.status, headers=response.headers)
    if not isinstance(data, dict):
        raise errors.InternalServerError("bedrock returned a response that is not a JSON object",
                                         provider=PROVIDER, model=deployment.provider_model, status_code=502)
    return data


async def _event_messages(response: aiohttp.ClientResponse, deployment: Deployment) -> AsyncIterator[EventMessage]:
    decoder = EventStreamDecoder()
    try:
        async for data in response.content.iter_any():
            for message in decoder.feed(data):
                yield message
        decoder.finish()
    except EventStreamError as exc:
        raise errors.APIConnectionError(f"bedrock stream is corrupted: {exc}", provider=PROVIDER,
                                        model=deployment.provider_model) from None


# -- errors ------------------------------------------------------------------------------------

_ERRORS_BY_TYPE: dict[str, type[errors.GatewayError]] = {
    "ValidationException": errors.BadRequestError,
    "AccessDeniedException": errors.PermissionDeniedError,
    "UnrecognizedClientException": errors.AuthenticationError,
    "InvalidSignatureException": errors.AuthenticationError,
    "ExpiredTokenException": errors.AuthenticationError,
    "ResourceNotFoundException": errors.NotFoundError,
    "ThrottlingException": errors.RateLimitError,
    "ServiceQuotaExceededException": errors.RateLimitError,
    "ModelTimeoutException": errors.TimeoutError,
    "ModelNotReadyException": errors.ServiceUnavailableError,
    "ServiceUnavailableException": errors.ServiceUnavailableError,
    "InternalServerException": errors.InternalServerError,
    "ModelErrorException": errors.InternalServerError,
    "ModelStreamErrorException": errors.InternalServerError,
}


def bedrock_error(error_type: str | None, body: Any, deployment: Deployment, *, status: int | None = None,
                  headers: Mapping[str, str] | None = None) -> errors.GatewayError:
    """Maps Bedrock's error type (`x-amzn-ErrorType`, or `:exception-type` in a stream, where it
    is lowerCamelCase) to the gateway's error; the class sets the status we answer with."""
    name = (error_type or "").split(":", 1)[0]
    name = name[:1].upper() + name[1:]
    message = str(body.get("message") or body.get("Message") or "") if isinstance(body, dict) else str(body or "")
    cls = _ERRORS_BY_TYPE.get(name) or errors.error_for_status(status or 500)
    if cls is errors.BadRequestError and "too long" in message.lower():
        cls = errors.ContextWindowExceededError
    return cls(
        f"bedrock error: {message or name or f'HTTP {status}'}",
        code=name or None,
        provider=PROVIDER,
        model=deployment.provider_model,
        retry_after=retry_after_seconds(headers) if headers else None,
        body=body,
    )


# -- OpenAI → Converse -------------------------------------------------------------------------

_DATA_URL = re.compile(r"data:image/(png|jpeg|jpg|gif|webp);base64,(.+)", re.DOTALL)
_TOOL_CHOICES = {"auto": {"auto": {}}, "required": {"any": {}}}


def converse_model_id(model: str) -> str:
    return model.removeprefix("converse/")


def converse_request(body: dict[str, Any]) -> dict[str, Any]:
    _reject_unsupported(body)
    system = [{"text": text} for m in body["messages"] if m.get("role") in ("system", "developer")
              if (text := _text_of(m.get("content")))]
    request: dict[str, Any] = {"messages": _converse_messages(body["messages"])}
    if system:
        request["system"] = system
    if inference := _inference_config(body):
        request["inferenceConfig"] = inference
    if body.get("tools"):
        request["toolConfig"] = _tool_config(body["tools"], body.get("tool_choice"))
    if body.get("thinking"):
        request["additionalModelRequestFields"] = {"thinking": body["thinking"]}
    return request


def _reject_unsupported(body: dict[str, Any]) -> None:
    if (body.get("n") or 1) > 1:
        raise errors.UnsupportedParamsError("bedrock returns one choice per request; n must be 1", param="n")
    response_format = body.get("response_format") or {}
    if response_format.get("type", "text") != "text":
        raise errors.UnsupportedParamsError("bedrock converse: response_format is not supported",
                                            param="response_format")
    if body.get("tool_choice") == "none":
        raise errors.UnsupportedParamsError("bedrock converse has no tool_choice 'none'; send no tools instead",
                                            param="tool_choice")


def _converse_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bedrock wants user and assistant turns alternating, so consecutive turns of one role
    (a user message after tool results, several tool results) merge into one."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            continue
        role, blocks = _turn(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _turn(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "user":
        return "user", _content_blocks(message.get("content"))
    if role == "assistant":
        calls = [_tool_use(call) for call in message.get("tool_calls") or []]
        return "assistant", _content_blocks(message.get("content")) + calls
    if role == "tool":
        result = {"toolUseId": message.get("tool_call_id"), "content": [{"text": _text_of(message.get("content"))}]}
        return "user", [{"toolResult": result}]
    raise errors.BadRequestError(f"bedrock: message role {role!r} is not supported", param="messages")


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if not content:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url")))
        else:
            raise errors.UnsupportedParamsError(f"bedrock: content part type {kind!r} is not supported",
                                                param="messages")
    return blocks


def _image_block(image_url: Any) -> dict[str, Any]:
    url = image_url.get("url", "") if isinstance(image_url, dict) else str(image_url or "")
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise errors.UnsupportedParamsError(
            "bedrock: images must be base64 data URLs (data:image/png;base64,...)", param="messages")
    image_format = "jpeg" if match[1] == "jpg" else match[1]
    return {"image": {"format": image_format, "source": {"bytes": match[2].strip()}}}


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        raise errors.BadRequestError(f"tool call {call.get('id')!r} has arguments that are not JSON",
                                     param="messages") from None
    return {"toolUse": {"toolUseId": call.get("id"), "name": function.get("name"), "input": arguments}}


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _inference_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        config["maxTokens"] = max_tokens
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    return config


def _tool_config(tools: list[dict[str, Any]], choice: Any) -> dict[str, Any]:
    specs = []
    for tool in tools:
        if tool.get("type") != "function":
            raise errors.UnsupportedParamsError(f"bedrock: tool type {tool.get('type')!r} is not supported",
                                                param="tools")
        function = tool["function"]
        spec: dict[str, Any] = {"name": function["name"],
                                "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}}}
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if isinstance(choice, dict):
        config["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    elif choice in _TOOL_CHOICES:
        config["toolChoice"] = _TOOL_CHOICES[choice]
    return config


# -- Converse → OpenAI -------------------------------------------------------------------------

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str:
    return _FINISH_REASONS.get(stop_reason or "", "stop")


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Bedrock counts cached input apart from `inputTokens`; OpenAI's prompt_tokens include it."""
    cache_read = int(usage.get("cacheReadInputTokens") or 0)
    cache_write = int(usage.get("cacheWriteInputTokens") or 0)
    prompt = int(usage.get("inputTokens") or 0) + cache_read + cache_write
    completion = int(usage.get("outputTokens") or 0)
    result = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
              "prompt_tokens_details": {"cached_tokens": cache_read}}
    if cache_write:
        result["cache_creation_input_tokens"] = cache_write
    return result


def chat_completion(data: dict[str, Any], model_id: str, request_id: str | None) -> dict[str, Any]:
    blocks = ((data.get("output") or {}).get("message") or {}).get("content") or []
    return {
        "id": f"chatcmpl-{request_id or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [{"index": 0, "message": _assistant_message(blocks),
                     "finish_reason": finish_reason(data.get("stopReason")), "logprobs": None}],
        "usage": openai_usage(data.get("usage") or {}),
    }


def _assistant_message(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    texts, reasoning, calls = [], [], []
    for block in blocks:
        if "text" in block:
            texts.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append({"id": use.get("toolUseId"), "type": "function",
                          "function": {"name": use.get("name"),
                                       "arguments": orjson.dumps(use.get("input") or {}).decode()}})
        elif "reasoningContent" in block:
            reasoning.append(((block["reasoningContent"] or {}).get("reasoningText") or {}).get("text", ""))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    return message


_EVENT_HANDLERS = {
    "messageStart": "_message_start",
    "contentBlockStart": "_block_start",
    "contentBlockDelta": "_block_delta",
    "messageStop": "_message_stop",
    "metadata": "_metadata",
}


class ConverseStream:
    """Turns ConverseStream events into `chat.completion.chunk` dicts, one event at a time."""

    def __init__(self, model_id: str, request_id: str | None) -> None:
        self.id = f"chatcmpl-{request_id or uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model_id
        self._tool_index: dict[int, int] = {}  # Converse contentBlockIndex → OpenAI tool_calls index

    def on_message(self, message: EventMessage, deployment: Deployment) -> dict[str, Any] | None:
        headers = message.headers
        kind = headers.get(":message-type", "event")
        if kind == "exception":
            raise bedrock_error(headers.get(":exception-type"), _payload(message, deployment), deployment)
        if kind == "error":
            raise bedrock_error(headers.get(":error-code"), {"message": headers.get(":error-message")}, deployment)
        handler = _EVENT_HANDLERS.get(headers.get(":event-type", ""))
        return getattr(self, handler)(_payload(message, deployment)) if handler else None

    def _message_start(self, event: dict[str, Any]) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, event: dict[str, Any]) -> dict[str, Any] | None:
        use = (event.get("start") or {}).get("toolUse")
        if use is None:
            return None
        index = self._tool_index.setdefault(event.get("contentBlockIndex", 0), len(self._tool_index))
        return self._chunk({"tool_calls": [{"index": index, "id": use.get("toolUseId"), "type": "function",
                                            "function": {"name": use.get("name"), "arguments": ""}}]})

    def _block_delta(self, event: dict[str, Any]) -> dict[str, Any] | None:
        delta = event.get("delta") or {}
        if "text" in delta:
            return self._chunk({"content": delta["text"]})
        if "toolUse" in delta:
            index = self._tool_index.get(event.get("contentBlockIndex", 0), 0)
            arguments = (delta["toolUse"] or {}).get("input", "")
            return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})
        reasoning = (delta.get("reasoningContent") or {}).get("text")
        return self._chunk({"reasoning_content": reasoning}) if reasoning else None

    def _message_stop(self, event: dict[str, Any]) -> dict[str, Any]:
        return self._chunk({}, finish_reason(event.get("stopReason")))

    def _metadata(self, event: dict[str, Any]) -> dict[str, Any] | None:
        if "usage" not in event:
            return None
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": openai_usage(event["usage"] or {})}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def _payload(message: EventMessage, deployment: Deployment) -> dict[str, Any]:
    if not message.payload:
        return {}
    try:
        decoded = orjson.loads(message.payload)
    except orjson.JSONDecodeError:
        raise errors.APIConnectionError("bedrock stream sent an event that is not JSON", provider=PROVIDER,
                                        model=deployment.provider_model) from None
    return decoded if isinstance(decoded, dict) else {}
