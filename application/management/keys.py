"""/key/generate, /key/update, /key/regenerate, /key/block, /key/unblock, /key/delete, /key/info, /key/list."""
from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

from moneta.application import access_fields as f
from moneta.application.management.context import (
    Context, is_team_admin, is_team_member, public, require_admin,
)
from moneta.application.principal import Principal
from moneta.domain.access import User, VirtualKey, entity_id, expiry
from moneta.domain.errors import BadRequestError, ConflictError, NotFoundError, PermissionDeniedError
from moneta.domain.redaction import key_hash

_TOKEN = re.compile(r"^[0-9a-f]{64}$")
_MAX_PAGE_SIZE = 100


def new_secret() -> str:
    return "sk-" + secrets.token_urlsafe(32)


def token_of(key: str) -> str:
    """The hash a key is known by: LiteLLM's scripts pass either the key or its hash."""
    return key if _TOKEN.match(key) else key_hash(key)


def generate(ctx: Context, principal: Principal, body: Any, *, for_user: str | None = None) -> dict[str, Any]:
    fields = f.checked(body, f.KEY, extra=("key",))
    if for_user:
        fields.setdefault("user_id", for_user)
    _may_issue(ctx, principal, fields)
    secret = _custom_secret(body.get("key")) if isinstance(body, dict) and body.get("key") else new_secret()
    if ctx.directory.key_by_token(key_hash(secret)) is not None:
        raise ConflictError("A key with this value exists.", param="key", code="key_exists")
    _check_alias(ctx, fields.get("key_alias"))
    changed = _implied_user(ctx, principal, fields.get("user_id"))
    key_id = uuid.uuid4().hex
    state = {**_settings(ctx, fields), "key_id": key_id, "token": key_hash(secret), "key_name": _name(secret)}
    key = VirtualKey.create(uuid.UUID(key_id), state, principal.actor)
    ctx.commit(*changed, key)
    return {**shown(key.state, secret=secret), "spend": 0}


def update(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, f.KEY, extra=("key",))
    key = _manageable(ctx, principal, body, "update this key")
    if "team_id" in fields or "user_id" in fields:
        _may_issue(ctx, principal, {**key.state, **fields})
    if fields.get("key_alias") and fields["key_alias"] != key.state.get("key_alias"):
        _check_alias(ctx, fields["key_alias"], except_key=key.state["key_id"])
    changes = _settings(ctx, fields)
    blocked = changes.pop("blocked", None)
    if changes:
        key.record(VirtualKey.KeyUpdated, changes=changes, actor=principal.actor)
    if blocked is not None and blocked != key.state.get("blocked"):
        key.record(VirtualKey.KeyBlocked if blocked else VirtualKey.KeyUnblocked, actor=principal.actor)
    ctx.commit(key)
    return shown(key.state)


def regenerate(ctx: Context, principal: Principal, body: Any, key_in_path: str | None = None) -> dict[str, Any]:
    body = dict(body or {})
    if key_in_path:
        body.setdefault("key", key_in_path)
    fields = f.checked(body, f.KEY, extra=("key", "new_key"))
    key = _manageable(ctx, principal, body, "regenerate this key")
    secret = _custom_secret(body["new_key"]) if body.get("new_key") else new_secret()
    changes = {name: value for name, value in _settings(ctx, fields).items() if name != "blocked"}
    key.record(VirtualKey.KeyRegenerated, token=key_hash(secret), key_name=_name(secret), changes=changes,
               actor=principal.actor)
    ctx.commit(key)
    return shown(key.state, secret=secret)


def set_blocked(ctx: Context, principal: Principal, body: Any, blocked: bool) -> dict[str, Any]:
    f.checked(body, {}, extra=("key",))
    key = _manageable(ctx, principal, body, "block or unblock this key")
    if key.state.get("blocked") != blocked:
        key.record(VirtualKey.KeyBlocked if blocked else VirtualKey.KeyUnblocked, actor=principal.actor)
        ctx.commit(key)
    return shown(key.state)


def delete(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    f.checked(body, {}, extra=("keys", "key_aliases"))
    given = body.get("keys") or []
    aliases = body.get("key_aliases") or []
    if not isinstance(given, list) or not isinstance(aliases, list) or not (given or aliases):
        raise BadRequestError("Give 'keys' (keys or their hashes) or 'key_aliases', as a list.", param="keys")
    keys = [_manageable(ctx, principal, {"key": k}, "delete this key") for k in given]
    keys += [_manageable(ctx, principal, {"key": _token_of_alias(ctx, a)}, "delete this key") for a in aliases]
    for key in keys:
        key.record(VirtualKey.KeyDeleted, actor=principal.actor)
    ctx.commit(*keys)
    return {"deleted_keys": [key.state["token"] for key in keys]}  # hashes: a response never repeats a key


def info(ctx: Context, principal: Principal, key: str | None) -> dict[str, Any]:
    """A key's settings, under its hash; without `key`, the caller's own key."""
    token = token_of(key) if key else principal.key_hash
    if not key and not principal.key_id:
        raise BadRequestError("Give the key to look up as the 'key' query parameter.", param="key")
    state = _find(ctx, token)
    if not _may_read(ctx, principal, state):
        raise PermissionDeniedError("You may not read this key.", code="not_allowed")
    return {"key": token, "info": {**shown(state), "spend": ctx.spend("api_key", token)}}


def listed(ctx: Context, principal: Principal, *, page: int, size: int, user_id: str | None, team_id: str | None,
           key_alias: str | None, full: bool) -> dict[str, Any]:
    if page < 1 or not 1 <= size <= _MAX_PAGE_SIZE:
        raise BadRequestError(f"page must be 1 or more and size between 1 and {_MAX_PAGE_SIZE}.", param="size")
    keys = [key for key in ctx.directory.all("key") if _may_read(ctx, principal, key)
            and (not user_id or key.get("user_id") == user_id) and (not team_id or key.get("team_id") == team_id)
            and (not key_alias or key.get("key_alias") == key_alias)]
    keys.sort(key=lambda key: key.get("created_at") or "")
    shown_keys = keys[(page - 1) * size: page * size]
    return {"keys": [shown(key) if full else key["token"] for key in shown_keys], "total_count": len(keys),
            "current_page": page, "total_pages": -(-len(keys) // size)}


_UNSET = f.defaults(f.KEY, leave_out=("duration",))


def shown(state: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    shown_state = {**_UNSET, "expires": None, **public(state)}
    if secret is not None:
        shown_state["key"] = secret
    return shown_state


# -- the rules --------------------------------------------------------------------------------------

def _may_issue(ctx: Context, principal: Principal, fields: dict[str, Any]) -> None:
    """A proxy admin issues any key; a team admin, keys of their team; an internal user, their own."""
    team = ctx.live("team", fields.get("team_id")) if fields.get("team_id") else None
    if fields.get("team_id") and team is None:
        raise NotFoundError(f"Team {fields['team_id']!r} does not exist.", param="team_id")
    if fields.get("budget_id") and ctx.live("budget", fields["budget_id"]) is None:
        raise NotFoundError(f"Budget {fields['budget_id']!r} does not exist.", param="budget_id")
    if principal.writes_everything:
        return
    if team is not None and is_team_admin(principal, team):
        return
    own = principal.role == "internal_user" and fields.get("user_id") in (None, principal.user_id)
    if own and (team is None or is_team_member(principal, team)):
        fields["user_id"] = principal.user_id
        return
    raise PermissionDeniedError("You may not issue this key: only a proxy admin, an admin of its team, or an"
                                " internal user for themselves can.", code="not_allowed")


def _may_read(ctx: Context, principal: Principal, key: dict[str, Any]) -> bool:
    if principal.reads_everything or key.get("key_id") == principal.key_id:
        return True
    if principal.user_id and key.get("user_id") == principal.user_id:
        return True
    team = ctx.directory.get("team", key.get("team_id"))
    return team is not None and is_team_admin(principal, team)


def _manageable(ctx: Context, principal: Principal, body: Any, action: str) -> Any:
    given = body.get("key") if isinstance(body, dict) else None
    if not isinstance(given, str) or not given:
        raise BadRequestError("'key' is required: the key or its hash.", param="key", code="missing_field")
    state = _find(ctx, token_of(given))
    key = ctx.store.get(uuid.UUID(state["key_id"]))
    if key is None or key.is_deleted:
        raise NotFoundError("This key does not exist.", param="key")
    team = ctx.directory.get("team", key.state.get("team_id"))
    own = principal.user_id and key.state.get("user_id") == principal.user_id and principal.role == "internal_user"
    if not (principal.writes_everything or own or (team is not None and is_team_admin(principal, team))):
        raise PermissionDeniedError(f"You may not {action}.", code="not_allowed")
    return key


def _find(ctx: Context, token: str) -> dict[str, Any]:
    state = ctx.directory.key_by_token(token)
    if state is None or state.get("deleted"):
        raise NotFoundError("This key does not exist.", param="key")
    return state


def _token_of_alias(ctx: Context, alias: Any) -> str:
    found = [key for key in ctx.directory.all("key") if key.get("key_alias") == alias]
    if not found:
        raise NotFoundError(f"No key has the alias {alias!r}.", param="key_aliases")
    return found[0]["token"]


def _check_alias(ctx: Context, alias: str | None, except_key: str | None = None) -> None:
    if alias and ctx.directory.alias_taken(alias, except_key):
        raise ConflictError(f"The key alias {alias!r} is taken.", param="key_alias", code="alias_taken")


def _implied_user(ctx: Context, principal: Principal, user_id: str | None) -> list[Any]:
    """LiteLLM creates the user a new key names when it does not exist yet."""
    if not user_id:
        return []
    user = ctx.store.get(entity_id("user", user_id))
    if user is not None:
        if user.is_deleted:
            raise NotFoundError(f"User {user_id!r} was deleted.", param="user_id")
        return []
    require_admin(principal, "create a user")
    return [User.create(entity_id("user", user_id), {"user_id": user_id, "user_role": "internal_user"},
                        principal.actor)]


def _settings(ctx: Context, fields: dict[str, Any]) -> dict[str, Any]:
    settings = {name: value for name, value in fields.items() if name != "duration"}
    if "duration" in fields:
        settings["expires"] = expiry(fields["duration"], ctx.clock())
    return settings


def _custom_secret(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("sk-") or len(value) < 12 or not value.isprintable():
        raise BadRequestError("A key given by the caller must start with 'sk-' and be at least 12 characters long.",
                              param="key")
    return value


def _name(secret: str) -> str:
    return f"sk-...{secret[-4:]}"

