"""Authentication: `Authorization: Bearer <key>`, `x-api-key: <key>` or `api-key: <key>`; the
master key or a virtual key (see application/authentication.py)."""
from __future__ import annotations

from typing import Any, Mapping

from fastapi import Request

from moneta.application.authentication import Authenticator
from moneta.application.gateway import Caller
from moneta.application.principal import Principal
from moneta.domain.errors import BadRequestError, PermissionDeniedError

END_USER_HEADER = "x-litellm-end-user-id"


def presented_key(headers: Mapping[str, str]) -> str | None:
    header = headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else header.strip()
    return headers.get("x-api-key") or headers.get("api-key")


def authenticator(app: Any) -> Authenticator:
    return app.state.container.authenticator


def caller_of(principal: Principal | None) -> Caller:
    if principal is None:
        return Caller()
    if not principal.key_id:
        return Caller(key_hash=principal.key_hash)
    return Caller(key_hash=principal.key_hash, principal={
        "key_id": principal.key_id, "key_alias": principal.key_alias, "team_id": principal.team_id,
        "user_id": principal.user_id, "org_id": principal.org_id})


async def authenticate(request: Request) -> Caller:
    principal = await request_principal(request)
    request.state.principal = principal
    return caller_of(principal)


async def request_principal(request: Request) -> Principal | None:
    return await authenticator(request.app).principal(presented_key(request.headers))


async def manager(request: Request) -> Principal:
    """The principal of a management or spend route (FastAPI dependency)."""
    principal = await request_principal(request)
    if principal is None:
        raise BadRequestError("Keys, teams and users need a master key: set general_settings.master_key.",
                              code="no_master_key")
    return principal


async def require_admin(request: Request) -> None:
    """FastAPI dependency for routes only the proxy admin (or a viewer, reading) may use."""
    principal = await request_principal(request)
    if principal is not None and not principal.reads_everything:
        raise PermissionDeniedError("Only a proxy admin or a proxy admin viewer may read this.", code="not_allowed")
