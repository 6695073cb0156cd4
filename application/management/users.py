"""/user/new|update|delete|info|list."""
from __future__ import annotations

import uuid
from typing import Any

from moneta.application import access_fields as f
from moneta.application.management import keys
from moneta.application.management.context import Context, public, require_admin
from moneta.application.principal import Principal
from moneta.domain.access import INTERNAL_USER, Team, User, VirtualKey, entity_id
from moneta.domain.errors import BadRequestError, ConflictError, NotFoundError, PermissionDeniedError

_KEY_FIELDS = ("models", "key_alias", "duration")  # also given to the key /user/new creates
_MAX_PAGE_SIZE = 100


def new(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, f.USER)
    require_admin(principal, "create a user")
    user_id = fields.setdefault("user_id", uuid.uuid4().hex)
    if ctx.exists(User, user_id):
        raise ConflictError(f"User {user_id!r} exists (or existed: an id is never reused).", param="user_id",
                            code="user_exists")
    teams = [ctx.load(Team, team_id, "Team") for team_id in fields.get("teams", [])]
    auto_key = fields.pop("auto_create_key", True)
    key_fields = {name: fields.pop(name) for name in ("key_alias", "duration") if name in fields}
    user = User.create(entity_id("user", user_id), {"user_role": INTERNAL_USER, **fields}, principal.actor)
    for team in teams:
        team.record(Team.TeamMemberAdded, user_id=user_id, member={"role": "user"}, actor=principal.actor)
    ctx.commit(user, *teams)
    answer = shown(user.state)
    if auto_key:
        key = keys.generate(ctx, principal, {**key_fields, "models": fields.get("models") or []}, for_user=user_id)
        answer.update(key=key["key"], token=key["token"], key_name=key["key_name"], expires=key.get("expires"))
    return answer


def update(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, {name: check for name, check in f.USER.items()
                              if name not in ("teams", "auto_create_key", "key_alias", "duration")})
    require_admin(principal, "update a user")
    user = ctx.load(User, f.required(fields, "user_id"), "User")
    changes = {name: value for name, value in fields.items() if name != "user_id"}
    if changes:
        user.record(User.UserUpdated, changes=changes, actor=principal.actor)
        ctx.commit(user)
    return shown(user.state)


def delete(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    """Deletes the users and their keys (as LiteLLM does); their team memberships end too."""
    fields = f.checked(body, {"user_ids": f.texts})
    require_admin(principal, "delete a user")
    users = [ctx.load(User, user_id, "User") for user_id in f.required(fields, "user_ids")]
    changed: list[Any] = []
    for user in users:
        user_id = user.state["user_id"]
        user.record(User.UserDeleted, actor=principal.actor)
        for key_state in ctx.directory.keys_where(user_id=user_id):
            key = ctx.store.get(uuid.UUID(key_state["key_id"]))
            if key is not None and not key.is_deleted:
                key.record(VirtualKey.KeyDeleted, actor=principal.actor)
                changed.append(key)
        for team_state in ctx.directory.teams_of(user_id):
            team = ctx.load(Team, team_state["team_id"], "Team")
            team.record(Team.TeamMemberRemoved, user_id=user_id, actor=principal.actor)
            changed.append(team)
    ctx.commit(*users, *changed)
    return {"deleted_users": fields["user_ids"]}


def info(ctx: Context, principal: Principal, user_id: str | None) -> dict[str, Any]:
    user_id = user_id or principal.user_id
    if not user_id:
        raise BadRequestError("'user_id' is required.", param="user_id", code="missing_field")
    if not (principal.reads_everything or user_id == principal.user_id):
        raise PermissionDeniedError("You may read only your own user.", code="not_allowed")
    user = ctx.live("user", user_id)
    if user is None:
        raise NotFoundError(f"User {user_id!r} does not exist.", param="user_id")
    return {"user_id": user_id, "user_info": {**shown(user), "spend": ctx.spend("user_id", user_id)},
            "keys": [public(key) for key in ctx.directory.keys_where(user_id=user_id)],
            "teams": [team["team_id"] for team in ctx.directory.teams_of(user_id)]}


def listed(ctx: Context, principal: Principal, *, page: int, page_size: int, role: str | None,
           user_ids: list[str] | None) -> dict[str, Any]:
    if not principal.reads_everything:
        raise PermissionDeniedError("Only a proxy admin or a proxy admin viewer can list users.", code="not_allowed")
    if page < 1 or not 1 <= page_size <= _MAX_PAGE_SIZE:
        raise BadRequestError(f"page must be 1 or more and page_size between 1 and {_MAX_PAGE_SIZE}.",
                              param="page_size")
    users = [user for user in ctx.directory.all("user") if (not role or user.get("user_role") == role)
             and (not user_ids or user["user_id"] in user_ids)]
    users.sort(key=lambda user: user.get("created_at") or "")
    return {"users": [shown(user) for user in users[(page - 1) * page_size: page * page_size]],
            "total": len(users), "page": page, "page_size": page_size, "total_pages": -(-len(users) // page_size)}


_UNSET = f.defaults(f.USER, leave_out=("teams", "auto_create_key", "key_alias", "duration"))


def shown(user: dict[str, Any]) -> dict[str, Any]:
    return {**_UNSET, **public(user)}
