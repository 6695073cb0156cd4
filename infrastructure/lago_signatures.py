"""Checking `X-Lago-Signature` as Lago signs its webhooks.

- `X-Lago-Signature-Algorithm: hmac`: base64(HMAC-SHA256(the organization's HMAC key, raw body)),
  compared in constant time.
- otherwise (`jwt`, Lago's default and its only signature before HMAC): an RS256 JWT whose `data`
  claim is the raw body, checked with Lago's public key (`GET /webhooks/json_public_key`), fetched
  once and kept; fetched again when a signature fails to verify (the key may have been rotated),
  at most once a minute so that forged webhooks cannot make the gateway hammer Lago. The `iss`
  claim (Lago's LAGO_API_URL) is not compared: it may differ from the URL the gateway reaches Lago
  by, and only Lago's private key can sign.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from typing import Awaitable, Callable

import jwt

from moneta.domain.errors import ServiceUnavailableError

log = logging.getLogger("moneta.lago")
REFETCH_AFTER_S = 60.0


class LagoSignatures:
    def __init__(self, hmac_key: str | None, public_key: Callable[[], Awaitable[str]],
                 refetch_after_s: float = REFETCH_AFTER_S) -> None:
        """`public_key` fetches Lago's public key (PEM)."""
        self._hmac_key = hmac_key.encode() if hmac_key else None
        self._fetch = public_key
        self.refetch_after_s = refetch_after_s
        self._pem: str | None = None
        self._fetched_at = float("-inf")  # time.monotonic()

    async def verify(self, body: bytes, signature: str | None, algorithm: str | None) -> str | None:
        """"hmac" or "jwt" when the signature is Lago's, else None."""
        if not signature:
            return None
        if (algorithm or "").lower() == "hmac":
            return "hmac" if self._hmac_matches(body, signature) else None
        if self._pem is not None and _jwt_matches(body, signature, self._pem):
            return "jwt"
        if self._pem is not None and time.monotonic() - self._fetched_at < self.refetch_after_s:
            return None
        await self._refresh()
        return "jwt" if _jwt_matches(body, signature, self._pem or "") else None

    def _hmac_matches(self, body: bytes, signature: str) -> bool:
        if self._hmac_key is None:  # webhook_hmac_key not configured: an HMAC webhook cannot be checked
            return False
        expected = base64.b64encode(hmac.new(self._hmac_key, body, hashlib.sha256).digest())
        return hmac.compare_digest(expected, signature.encode())

    async def _refresh(self) -> None:
        try:
            pem = await self._fetch()
        except Exception as error:
            log.warning("Lago's webhook public key could not be fetched: %s", error)
            raise ServiceUnavailableError("Lago's webhook public key is out of reach; the webhook cannot be checked "
                                          "now.", code="lago_unreachable") from None
        self._pem, self._fetched_at = pem, time.monotonic()


def _jwt_matches(body: bytes, token: str, pem: str) -> bool:
    try:
        claims = jwt.decode(token, pem, algorithms=["RS256"], options={"require": ["data"]})
    except (jwt.InvalidTokenError, ValueError):
        return False
    data = claims.get("data")
    return isinstance(data, str) and hmac.compare_digest(data.encode(), body)
