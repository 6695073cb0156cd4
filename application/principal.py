"""Who is calling: the master key (the proxy admin) or a virtual key, with the user, team and
organization it belongs to, read from the in-memory directory without I/O."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from moneta.application.access_directory import Directory
from moneta.domain.access import INTERNAL_USER, PROXY_ADMIN, PROXY_ADMIN_VIEWER
from moneta.domain.errors import AuthenticationError, PermissionDeniedError

KEY_ONLY = "key"  # a virtual key that belongs to no user: it calls models and reads itself
ALL_MODELS = "all-proxy-models"


@dataclass(frozen=True)
class Principal:
    role: str
    key_hash: str = ""
    key_id: str = ""
    key_alias: str = ""
    user_id: str = ""
    team_id: str = ""
    org_id: str = ""
    key: dict[str, Any] = field(default_factory=dict, compare=False)  # the key's state (no secret in it)
    team: dict[str, Any] = field(default_factory=dict, compare=False)
    expires_at: float | None = None  # epoch seconds

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    @property
    def is_master(self) -> bool:
        return self.role == PROXY_ADMIN and not self.key_id

    @property
    def reads_everything(self) -> bool:
        return self.role in (PROXY_ADMIN, PROXY_ADMIN_VIEWER)

    @property
    def writes_everything(self) -> bool:
        return self.role == PROXY_ADMIN

    @property
    def actor(self) -> str:
        """Who made a change, as the ledger records it."""
        if self.is_master:
            return "master_key"
        return f"user:{self.user_id}" if self.user_id else f"key:{self.key_id}"


def master(key_hash: str) -> Principal:
    return Principal(role=PROXY_ADMIN, key_hash=key_hash)


def of_key(directory: Directory, token: str, now: datetime) -> Principal:
    """The principal behind a virtual key's hash; 401 for a key that cannot be used, 403 when
    what it belongs to is blocked, each saying why."""
    key = directory.key_by_token(token)
    if key is None:
        raise AuthenticationError("Invalid API key.")
    _check_key(key, now)
    team = _team_of(directory, key)
    user = directory.live("user", key.get("user_id"))
    org_id = team.get("organization_id") if team else None
    expires = key.get("expires")
    return Principal(role=(user or {}).get("user_role") or (INTERNAL_USER if key.get("user_id") else KEY_ONLY),
                     key_hash=token, key_id=key["key_id"], key_alias=key.get("key_alias") or "",
                     user_id=key.get("user_id") or "", team_id=key.get("team_id") or "", org_id=org_id or "",
                     key=key, team=team or {},
                     expires_at=datetime.fromisoformat(expires).timestamp() if expires else None)


def _check_key(key: dict[str, Any], now: datetime) -> None:
    if key.get("deleted"):
        raise AuthenticationError("This key was deleted.", code="key_deleted")
    expires = key.get("expires")
    if expires and datetime.fromisoformat(expires) <= now:
        raise AuthenticationError(f"This key expired at {expires}.", code="key_expired")
    if key.get("blocked"):
        raise AuthenticationError("This key is blocked.", code="key_blocked")


def _team_of(directory: Directory, key: dict[str, Any]) -> dict[str, Any] | None:
    team_id = key.get("team_id")
    if not team_id:
        return None
    team = directory.get("team", team_id)
    if team is None or team.get("deleted"):
        raise PermissionDeniedError(f"The key's team {team_id!r} was deleted.", code="team_deleted")
    if team.get("blocked"):
        raise PermissionDeniedError(f"The key's team {team_id!r} is blocked.", code="team_blocked")
    return team
