"""/team/new|update|delete|info|list|block|unblock and /team/member_add|member_update|member_delete."""
from __future__ import annotations

import uuid
from typing import Any

from moneta.application import access_fields as f
from moneta.application.management.context import (
    Context, is_team_member, manages_team, public, reads_team, require_admin,
)
from moneta.application.principal import Principal
from moneta.domain.access import Organization, Team, User, entity_id
from moneta.domain.errors import BadRequestError, ConflictError, NotFoundError

# What a team admin may change of their own team; budgets, limits, models and the organization
# are the proxy admin's.
_TEAM_ADMIN_FIELDS = {"team_alias", "metadata"}


def new(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, f.TEAM)
    require_admin(principal, "create a team")
    team_id = fields.setdefault("team_id", uuid.uuid4().hex)
    if ctx.exists(Team, team_id):
        raise ConflictError(f"Team {team_id!r} exists (or existed: an id is never reused).", param="team_id",
                            code="team_exists")
    _check_organization(ctx, fields.get("organization_id"))
    members = [_member(item) for item in fields.pop("members_with_roles", None) or []]
    team = Team.create(entity_id("team", team_id), {**fields, "members": {}}, principal.actor)
    users = _add_members(ctx, principal, team, members)
    ctx.commit(*users, team)
    return shown(team.state)


def update(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, f.TEAM)
    team = ctx.load(Team, f.required(fields, "team_id"), "Team")
    manages_team(principal, team.state, "update it")
    changes = {name: value for name, value in fields.items() if name not in ("team_id", "members_with_roles")}
    if not principal.writes_everything and set(changes) - _TEAM_ADMIN_FIELDS:
        require_admin(principal, "change " + ", ".join(sorted(set(changes) - _TEAM_ADMIN_FIELDS)))
    if "organization_id" in changes:
        _move(ctx, team.state, changes["organization_id"])
    blocked = changes.pop("blocked", None)
    if changes:
        team.record(Team.TeamUpdated, changes=changes, actor=principal.actor)
    if blocked is not None and blocked != team.state.get("blocked"):
        team.record(Team.TeamBlocked if blocked else Team.TeamUnblocked, actor=principal.actor)
    ctx.commit(team)
    return {"team_id": team.state["team_id"], "data": shown(team.state)}


def set_blocked(ctx: Context, principal: Principal, body: Any, blocked: bool) -> dict[str, Any]:
    fields = f.checked(body, {"team_id": f.text})
    require_admin(principal, "block or unblock a team")
    team = ctx.load(Team, f.required(fields, "team_id"), "Team")
    if team.state.get("blocked") != blocked:
        team.record(Team.TeamBlocked if blocked else Team.TeamUnblocked, actor=principal.actor)
        ctx.commit(team)
    return shown(team.state)


def delete(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, {"team_ids": f.texts})
    require_admin(principal, "delete a team")
    teams = [ctx.load(Team, team_id, "Team") for team_id in f.required(fields, "team_ids")]
    for team in teams:
        team.record(Team.TeamDeleted, actor=principal.actor)
    ctx.commit(*teams)
    return {"deleted_teams": fields["team_ids"]}


def info(ctx: Context, principal: Principal, team_id: str | None) -> dict[str, Any]:
    if not team_id:
        raise BadRequestError("'team_id' is required.", param="team_id", code="missing_field")
    team = ctx.live("team", team_id)
    if team is None:
        raise NotFoundError(f"Team {team_id!r} does not exist.", param="team_id")
    reads_team(principal, team)
    keys = [public(key) for key in ctx.directory.keys_where(team_id=team_id)]
    return {"team_id": team_id, "team_info": {**shown(team), "spend": ctx.spend("team_id", team_id)}, "keys": keys,
            "team_memberships": _memberships(team)}


def listed(ctx: Context, principal: Principal, *, user_id: str | None, organization_id: str | None) -> list[Any]:
    teams = [team for team in ctx.directory.all("team")
             if (principal.reads_everything or is_team_member(principal, team))
             and (not user_id or user_id in (team.get("members") or {}))
             and (not organization_id or team.get("organization_id") == organization_id)]
    return [shown(team) for team in sorted(teams, key=lambda team: team.get("created_at") or "")]


def member_add(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, {"team_id": f.text, "member": lambda name, value: value,
                              "max_budget_in_team": f.money})
    team = ctx.load(Team, f.required(fields, "team_id"), "Team")
    manages_team(principal, team.state, "add members")
    given = f.required(fields, "member")
    members = [_member(item) for item in (given if isinstance(given, list) else [given])]
    for member in members:
        if "max_budget_in_team" in fields:
            member.setdefault("max_budget_in_team", fields["max_budget_in_team"])
        if member["user_id"] in (team.state.get("members") or {}):
            raise ConflictError(f"User {member['user_id']!r} is already a member of team {team.state['team_id']!r}.",
                                param="member", code="already_member")
    users = _add_members(ctx, principal, team, members)
    ctx.commit(*users, team)
    return shown(team.state)


def member_update(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, {"team_id": f.text, **f.MEMBER})
    team = ctx.load(Team, f.required(fields, "team_id"), "Team")
    manages_team(principal, team.state, "update members")
    user_id = _member_id(team.state, fields)
    changes = {name: fields[name] for name in ("role", "max_budget_in_team") if name in fields}
    team.record(Team.TeamMemberUpdated, user_id=user_id, member=changes, actor=principal.actor)
    ctx.commit(team)
    return {"team_id": team.state["team_id"], "user_id": user_id, **team.state["members"][user_id]}


def member_delete(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, {"team_id": f.text, "user_id": f.text, "user_email": f.text})
    team = ctx.load(Team, f.required(fields, "team_id"), "Team")
    manages_team(principal, team.state, "remove members")
    team.record(Team.TeamMemberRemoved, user_id=_member_id(team.state, fields), actor=principal.actor)
    ctx.commit(team)
    return shown(team.state)


_UNSET = f.defaults(f.TEAM, leave_out=("members_with_roles",))


def shown(team: dict[str, Any]) -> dict[str, Any]:
    shown_team = {**_UNSET, **public(team)}
    shown_team["members_with_roles"] = [{"user_id": user_id, **member}
                                        for user_id, member in (team.get("members") or {}).items()]
    shown_team.pop("members", None)
    return shown_team


def _memberships(team: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"team_id": team["team_id"], "user_id": user_id, "role": member.get("role"),
             "max_budget_in_team": member.get("max_budget_in_team")}
            for user_id, member in (team.get("members") or {}).items()]


def _member(item: Any) -> dict[str, Any]:
    member = f.checked(item, f.MEMBER)
    if not member.get("user_id"):
        if not member.get("user_email"):
            raise BadRequestError("A member needs a 'user_id' or a 'user_email'.", param="member")
        member["user_id"] = member["user_email"]
    member.setdefault("role", "user")
    return member


def _member_id(team: dict[str, Any], fields: dict[str, Any]) -> str:
    user_id = fields.get("user_id") or fields.get("user_email")
    if not user_id:
        raise BadRequestError("'user_id' is required.", param="user_id", code="missing_field")
    if user_id not in (team.get("members") or {}):
        raise NotFoundError(f"User {user_id!r} is not a member of team {team['team_id']!r}.", param="user_id")
    return user_id


def _add_members(ctx: Context, principal: Principal, team: Team, members: list[dict[str, Any]]) -> list[User]:
    """Records each membership; a user the gateway does not know is created, as LiteLLM does."""
    created = []
    for member in members:
        user_id = member.pop("user_id")
        if not ctx.exists(User, user_id):
            fields = {"user_id": user_id, "user_role": "internal_user"}
            if member.get("user_email"):
                fields["user_email"] = member["user_email"]
            created.append(User.create(entity_id("user", user_id), fields, principal.actor))
        _check_same_organization(ctx, team.state, user_id)
        member.pop("user_email", None)
        team.record(Team.TeamMemberAdded, user_id=user_id, member=member, actor=principal.actor)
    return created


def _check_same_organization(ctx: Context, team: dict[str, Any], user_id: str) -> None:
    """A team of an organization takes only that organization's members, once the user belongs
    to any organization."""
    org_id = team.get("organization_id")
    orgs = [org for org in ctx.directory.all("organization") if user_id in (org.get("members") or {})]
    if org_id and orgs and all(org["organization_id"] != org_id for org in orgs):
        raise BadRequestError(f"User {user_id!r} belongs to another organization than the team's ({org_id!r}).",
                              param="member", code="organization_mismatch")


def _check_organization(ctx: Context, organization_id: str | None) -> None:
    if organization_id:
        ctx.load(Organization, organization_id, "Organization")


def _move(ctx: Context, team: dict[str, Any], organization_id: str) -> None:
    current = team.get("organization_id")
    if current and current != organization_id:
        raise ConflictError(f"Team {team['team_id']!r} belongs to organization {current!r}; a team does not move"
                            " between organizations.", param="organization_id", code="organization_mismatch")
    _check_organization(ctx, organization_id)
