"""Authentication: `Authorization: Bearer <key>`, `x-api-key: <key>` or `api-key: <key>`."""
from __future__ import annotations

import hmac
from typing import Any, Mapping

from fastapi import Request

from moneta.application.gateway import Caller
from moneta.domain.errors import AuthenticationError
from moneta.domain.redaction import key_hash


def presented_key(headers: Mapping[str, str]) -> str | None:
    header = headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else header.strip()
    return headers.get("x-api-key") or headers.get("api-key")


def authenticate_key(app: Any, key: str | None) -> Caller:
    """The caller who presents `key` to the app (HTTP or WebSocket); AuthenticationError (401)
    without the right key. With no master key configured the gateway is open and callers are
    anonymous."""
    master_key: str | None = app.state.container.config.master_key
    if not master_key:
        return Caller()
    if not key:
        raise AuthenticationError("No API key provided. Pass it as 'Authorization: Bearer <key>' or 'x-api-key'.")
    if not hmac.compare_digest(key.encode(), master_key.encode()):
        raise AuthenticationError("Invalid API key.")
    return Caller(key_hash=app.state.master_key_hash)


def authenticate(request: Request) -> Caller:
    return authenticate_key(request.app, presented_key(request.headers))


def require_admin(request: Request) -> None:
    """FastAPI dependency for management routes (spend, reports)."""
    authenticate(request)


def master_key_hash(master_key: str | None) -> str:
    return key_hash(master_key) if master_key else ""
