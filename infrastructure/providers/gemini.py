"""Google's Gemini models: the Gemini API (`gemini/`) and Vertex AI (`vertex_ai/`).

Both take the same `generateContent` body; they differ in URL and auth. Text completions go
through chat; embeddings are `batchEmbedContents` on the Gemini API and `:predict` on Vertex AI.

Vertex AI signs in with a service account: an RS256-signed JWT is exchanged at the credentials'
`token_uri` for an access token, cached until shortly before it expires. Signing needs the
`cryptography` package.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from moneta.application.config import Deployment
from moneta.application.ports import AudioFile
from moneta.domain import errors
from moneta.infrastructure.http_session import session
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
from moneta.infrastructure.providers.translation.gemini_request import gemini_request
from moneta.infrastructure.providers.translation.gemini_response import (
    StreamTranslator,
    openai_completion,
)
from moneta.infrastructure.providers.translation.text_completion import (
    text_completion_via_chat,
)
from moneta.infrastructure.providers.vertex_embeddings import vertex_embedding

GEMINI_BASE = "https://generativelanguage.googleapis.com/v1beta"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_REFRESH_MARGIN_S = 300
_CONTEXT_WINDOW_HINTS = ("exceeds the maximum number of tokens", "input token count")

Signer = Callable[[str, bytes], bytes]  # (PEM private key, message) -> signature


def gemini_error(provider: str, status: int, body: Any, headers: Mapping[str, str], model: str) -> errors.GatewayError:
    """Google's `{"error": {"code", "message", "status", "details"}}`: by status, refined by message.

    An invalid API key comes back as 400 INVALID_ARGUMENT; callers get an authentication error.
    """
    detail = body.get("error") if isinstance(body, dict) else None
    message = str(detail.get("message") if isinstance(detail, dict) else body or f"HTTP {status}")[:1000]
    code = detail.get("status") if isinstance(detail, dict) else None
    cls = errors.error_for_status(status)
    if "API_KEY_INVALID" in orjson.dumps(body).decode() or "API key not valid" in message:
        cls, status = errors.AuthenticationError, 401
    elif cls is errors.BadRequestError and any(hint in message.lower() for hint in _CONTEXT_WINDOW_HINTS):
        cls = errors.ContextWindowExceededError
    return cls(f"{provider} error: {message}", code=code, provider=provider, model=model, status_code=status,
               retry_after=retry_after_seconds(headers), body=body)


class _GoogleGenerativeProvider(ABC):
    """What the Gemini API and Vertex AI share: translation, streaming, errors."""

    name = "gemini"

    async def chat(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        payload = gemini_request(apply_param_policy(self.name, deployment, body))
        answer = await self._post_json(deployment, "generateContent", payload)
        return openai_completion(answer, deployment.provider_model)

    async def chat_stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        payload = gemini_request(apply_param_policy(self.name, deployment, body))
        url = await self._url(deployment, "streamGenerateContent") + "?alt=sse"
        translator = StreamTranslator(deployment.provider_model)
        async with guarded_post(url, payload, await self._headers(deployment), stream_timeout(deployment),
                                deployment, self.name) as response:
            if response.status >= 400:
                raise await self._error(deployment, response)
            async for event in sse_data(response, deployment, self.name):
                if "error" in event:
                    status = int((event["error"] or {}).get("code") or 500)
                    raise gemini_error(self.name, status, event, {}, deployment.provider_model)
                for chunk in translator.on_response(event):
                    yield chunk
        yield translator.final()

    async def text_completion(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await text_completion_via_chat(self.chat, deployment, body)

    async def transcription(self, deployment: Deployment, audio: AudioFile, fields: dict[str, Any]) -> dict[str, Any]:
        raise self._unsupported(deployment, "audio transcription")

    @abstractmethod
    async def _url(self, deployment: Deployment, method: str) -> str: ...

    @abstractmethod
    async def _headers(self, deployment: Deployment) -> dict[str, str]: ...

    async def _post_json(self, deployment: Deployment, method: str, payload: dict[str, Any]) -> Any:
        url = await self._url(deployment, method)
        timeout = aiohttp.ClientTimeout(total=deployment.timeout or DEFAULT_TIMEOUT_S)
        async with guarded_post(url, payload, await self._headers(deployment), timeout, deployment,
                                self.name) as response:
            if response.status >= 400:
                raise await self._error(deployment, response)
            return await read_json(response, deployment, self.name)

    async def _error(self, deployment: Deployment, response: aiohttp.ClientResponse) -> errors.GatewayError:
        return gemini_error(self.name, response.status, await error_body(response), response.headers,
                            deployment.provider_model)

    def _unsupported(self, deployment: Deployment, what: str) -> errors.BadRequestError:
        return errors.BadRequestError(f"{self.name} does not offer {what} through Moneta", param="model",
                                      code="unsupported_endpoint", provider=self.name, model=deployment.provider_model)


class GeminiProvider(_GoogleGenerativeProvider):
    """The Gemini API, with an API key (`GEMINI_API_KEY`)."""

    name = "gemini"

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.fallback_api_key = environ.get("GEMINI_API_KEY")
        self.default_base = environ.get("GEMINI_API_BASE") or GEMINI_BASE

    async def embedding(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or ())
        model = f"models/{deployment.provider_model}"
        request: dict[str, Any] = {"model": model}
        if body.get("dimensions"):
            request["outputDimensionality"] = body["dimensions"]
        payload = {"requests": [{**request, "content": {"parts": [{"text": t}]}} for t in texts]}
        answer = await self._post_json(deployment, "batchEmbedContents", payload)
        data = [{"object": "embedding", "index": i, "embedding": e.get("values", [])}
                for i, e in enumerate(answer.get("embeddings") or ())]
        return {"object": "list", "data": data, "model": deployment.provider_model}

    async def _url(self, deployment: Deployment, method: str) -> str:
        base = (deployment.api_base or self.default_base).rstrip("/")
        return f"{base}/models/{deployment.provider_model}:{method}"

    async def _headers(self, deployment: Deployment) -> dict[str, str]:
        key = deployment.api_key or self.fallback_api_key
        if not key:
            raise errors.AuthenticationError("no API key for gemini (set api_key or GEMINI_API_KEY)",
                                             provider=self.name, model=deployment.provider_model)
        return {"x-goog-api-key": key, "Content-Type": "application/json", **extra_headers(deployment)}


class VertexAIProvider(_GoogleGenerativeProvider):
    """Gemini and the text-embedding models on Vertex AI, signed in as a service account
    (`vertex_credentials`)."""

    name = "vertex_ai"

    def __init__(self, environ: Mapping[str, str], signer: Signer | None = None) -> None:
        self.environ = environ
        self.tokens = ServiceAccountTokens(signer or rs256_sign)
        self._loaded: dict[str, dict[str, Any]] = {}  # parsed credentials by their JSON text or path

    async def embedding(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await vertex_embedding(functools.partial(self._post_json, deployment, "predict"), deployment, body)

    async def _url(self, deployment: Deployment, method: str) -> str:
        params = deployment.extra_params
        location = params.get("vertex_location") or self.environ.get("VERTEXAI_LOCATION") or "us-central1"
        project = (params.get("vertex_project") or self.environ.get("VERTEXAI_PROJECT")
                   or self._credentials(deployment).get("project_id"))
        if not project:
            raise errors.BadRequestError("vertex_ai deployments need vertex_project", param="vertex_project",
                                         provider=self.name, model=deployment.provider_model)
        host = "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"
        base = (deployment.api_base or f"https://{host}").rstrip("/")
        return (f"{base}/v1/projects/{project}/locations/{location}/publishers/google/models/"
                f"{deployment.provider_model}:{method}")

    async def _headers(self, deployment: Deployment) -> dict[str, str]:
        token = await self.tokens.token(self._credentials(deployment), deployment)
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra_headers(deployment)}

    def _credentials(self, deployment: Deployment) -> dict[str, Any]:
        source = deployment.extra_params.get("vertex_credentials") or self.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if not source:
            raise errors.AuthenticationError("vertex_ai deployments need vertex_credentials (a service-account JSON)",
                                             provider=self.name, model=deployment.provider_model)
        if isinstance(source, dict):
            return load_service_account(source)
        if source not in self._loaded:
            self._loaded[source] = load_service_account(source)
        return self._loaded[source]


def load_service_account(source: Any) -> dict[str, Any]:
    """Service-account credentials from a dict, a JSON string or the path of a JSON file."""
    if isinstance(source, dict):
        info = source
    else:
        text = str(source).strip()
        try:
            info = json.loads(text if text.startswith("{") else Path(text).read_text())
        except (OSError, ValueError):
            raise errors.AuthenticationError("vertex_credentials is neither service-account JSON nor a readable "
                                             "JSON file", provider="vertex_ai") from None
    if info.get("type") != "service_account" or not all(k in info for k in ("client_email", "private_key")):
        raise errors.AuthenticationError("vertex_credentials must be a service-account key (type service_account)",
                                         provider="vertex_ai")
    return info


def rs256_sign(private_key_pem: str, message: bytes) -> bytes:
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
    except ImportError:
        raise errors.InternalServerError("vertex_ai sign-in needs the 'cryptography' package installed",
                                         provider="vertex_ai") from None
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr, call-arg]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ServiceAccountTokens:
    """OAuth access tokens for service accounts (RFC 7523 JWT bearer grant), cached per account."""

    def __init__(self, signer: Signer) -> None:
        self._sign = signer
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def token(self, info: dict[str, Any], deployment: Deployment) -> str:
        token_uri = info.get("token_uri") or "https://oauth2.googleapis.com/token"
        key = (info["client_email"], token_uri)
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._cache.get(key)
            if cached and cached[1] > time.time():
                return cached[0]
            value, lifetime = await self._exchange(info, token_uri, deployment)
            self._cache[key] = (value, time.time() + max(lifetime - _REFRESH_MARGIN_S, 0))
            return value

    def assertion(self, info: dict[str, Any], token_uri: str) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": info.get("private_key_id", "")}
        claims = {"iss": info["client_email"], "scope": CLOUD_PLATFORM_SCOPE, "aud": token_uri,
                  "iat": now, "exp": now + 3600}
        signing_input = f"{_b64url(orjson.dumps(header))}.{_b64url(orjson.dumps(claims))}"
        return f"{signing_input}.{_b64url(self._sign(info['private_key'], signing_input.encode()))}"

    async def _exchange(self, info: dict[str, Any], token_uri: str, deployment: Deployment) -> tuple[str, float]:
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": self.assertion(info, token_uri)}
        try:
            async with session().post(token_uri, data=form, timeout=aiohttp.ClientTimeout(total=30)) as response:
                body = await error_body(response)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise errors.AuthenticationError(f"could not reach the vertex_ai token endpoint: {type(exc).__name__}",
                                             provider="vertex_ai", model=deployment.provider_model) from None
        if response.status >= 400 or not isinstance(body, dict) or "access_token" not in body:
            reason = body.get("error") if isinstance(body, dict) else None
            raise errors.AuthenticationError(
                f"the token endpoint refused the vertex_ai service account ({reason or response.status})",
                provider="vertex_ai", model=deployment.provider_model)
        return body["access_token"], float(body.get("expires_in") or 3600)
