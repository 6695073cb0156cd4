"""Azure OpenAI (`azure/<deployment name>`): OpenAI's API under per-deployment URLs.

Auth, in order: `azure_ad_token` (an Entra ID token), else the client-credentials flow with
`tenant_id`/`client_id`/`client_secret` (the token is cached until shortly before it expires),
else the `api-key` header.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp

from moneta.application.config import Deployment
from moneta.domain.errors import AuthenticationError, BadRequestError
from moneta.infrastructure.http_session import session
from moneta.infrastructure.providers.openai_compatible import error_body, extra_headers
from moneta.infrastructure.providers.openai_family import FamilyDefaults, OpenAIFamilyProvider

DEFAULT_API_VERSION = "2024-10-21"
REALTIME_API_VERSION = "2025-04-01-preview"  # the GA REST version above has no Realtime API
ENTRA_AUTHORITY = "https://login.microsoftonline.com"
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
_REFRESH_MARGIN_S = 300

AZURE_DEFAULTS = FamilyDefaults("azure", None, ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY"), "AZURE_API_BASE",
                                embeddings=True, transcription=True)


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


class EntraTokens:
    """Client-credentials tokens from Microsoft Entra ID, one per (tenant, client), cached."""

    def __init__(self, authority: str = ENTRA_AUTHORITY) -> None:
        self.authority = authority.rstrip("/")
        self._cache: dict[tuple[str, str], _Token] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def token(self, tenant_id: str, client_id: str, client_secret: str) -> str:
        key = (tenant_id, client_id)
        cached = self._cache.get(key)
        if cached and cached.expires_at > time.time():
            return cached.value
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._cache.get(key)
            if cached and cached.expires_at > time.time():
                return cached.value
            fresh = await self._fetch(tenant_id, client_id, client_secret)
            self._cache[key] = fresh
            return fresh.value

    async def _fetch(self, tenant_id: str, client_id: str, client_secret: str) -> _Token:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret,
                "scope": COGNITIVE_SERVICES_SCOPE}
        url = f"{self.authority}/{tenant_id}/oauth2/v2.0/token"
        try:
            async with session().post(url, data=form, timeout=aiohttp.ClientTimeout(total=30)) as response:
                body = await error_body(response)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AuthenticationError(f"could not reach Entra ID for an azure token: {type(exc).__name__}",
                                      provider="azure") from None
        if response.status >= 400 or not isinstance(body, dict) or "access_token" not in body:
            reason = body.get("error") if isinstance(body, dict) else None
            raise AuthenticationError(f"Entra ID refused the azure client credentials ({reason or response.status})",
                                      provider="azure", status_code=401)
        lifetime = float(body.get("expires_in") or 3600)
        return _Token(body["access_token"], time.time() + max(lifetime - _REFRESH_MARGIN_S, 0))


class AzureOpenAIProvider(OpenAIFamilyProvider):
    def __init__(self, environ: Mapping[str, str], tokens: EntraTokens | None = None) -> None:
        super().__init__(AZURE_DEFAULTS, environ)
        self.default_api_version = environ.get("AZURE_API_VERSION") or DEFAULT_API_VERSION
        self.tokens = tokens or EntraTokens(environ.get("AZURE_AUTHORITY_HOST") or ENTRA_AUTHORITY)

    def _url(self, deployment: Deployment, path: str) -> str:
        base = super()._url(deployment, "")
        version = deployment.api_version or self.default_api_version
        return f"{base}/openai/deployments/{deployment.provider_model}{path}?api-version={version}"

    async def realtime_target(self, deployment: Deployment) -> tuple[str, dict[str, str]]:
        query = urlencode({"api-version": deployment.api_version or REALTIME_API_VERSION,
                           "deployment": deployment.provider_model})
        url = f"{super()._url(deployment, '')}/openai/realtime?{query}"
        return url, await self._headers(deployment, json_body=False)

    async def _headers(self, deployment: Deployment, json_body: bool = True) -> dict[str, str]:
        headers = {"Content-Type": "application/json"} if json_body else {}
        headers.update(await self._auth(deployment))
        headers.update(extra_headers(deployment))
        return headers

    async def _auth(self, deployment: Deployment) -> dict[str, str]:
        params = deployment.extra_params
        if params.get("azure_ad_token"):
            return {"Authorization": f"Bearer {params['azure_ad_token']}"}
        if params.get("tenant_id") and params.get("client_id") and params.get("client_secret"):
            token = await self.tokens.token(str(params["tenant_id"]), str(params["client_id"]),
                                            str(params["client_secret"]))
            return {"Authorization": f"Bearer {token}"}
        key = deployment.api_key or self.fallback_api_key
        if not key:
            raise BadRequestError("azure deployments need an api_key, azure_ad_token or tenant_id/client_id/"
                                  "client_secret", param="api_key", provider="azure", model=deployment.provider_model)
        return {"api-key": key}
