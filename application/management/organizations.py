"""/organization/new|update|delete|info|list|member_add|member_delete."""
from __future__ import annotations

import uuid
from typing import Any

from moneta.application import access_fields as f
from moneta.application.management.context import Context, public, require_admin
from moneta.application.principal import Principal
from moneta.domain.access import Organization, User, entity_id
from moneta.domain.errors import BadRequestError, ConflictError, NotFoundError, PermissionDeniedError


def new(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, f.ORGANIZATION)
    require_admin(principal, "create an organization")
    org_id = fields.setdefault("organization_id", uuid.uuid4().hex)
    if ctx.exists(Organization, org_id):
        raise ConflictError(f"Organization {org_id!r} exists (or existed: an id is never reused).",
                            param="organization_id", code="organization_exists")
    _check_budget(ctx, fields.get("budget_id"))
    org = Organization.create(entity_id("organization", org_id), {**fields, "members": {}}, principal.actor)
    ctx.commit(org)
    return shown(org.state)


def update(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, f.ORGANIZATION)
    require_admin(principal, "update an organization")
    org = ctx.load(Organization, f.required(fields, "organization_id"), "Organization")
    _check_budget(ctx, fields.get("budget_id"))
    changes = {name: value for name, value in fields.items() if name != "organization_id"}
    if changes:
        org.record(Organization.OrganizationUpdated, changes=changes, actor=principal.actor)
        ctx.commit(org)
    return shown(org.state)


def delete(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, {"organization_ids": f.texts})
    require_admin(principal, "delete an organization")
    orgs = [ctx.load(Organization, org_id, "Organization") for org_id in f.required(fields, "organization_ids")]
    for org in orgs:
        teams = [team["team_id"] for team in ctx.directory.all("team")
                 if team.get("organization_id") == org.state["organization_id"]]
        if teams:
            raise ConflictError(f"Organization {org.state['organization_id']!r} still has teams ({', '.join(teams)});"
                                " delete them first.", param="organization_ids", code="organization_in_use")
        org.record(Organization.OrganizationDeleted, actor=principal.actor)
    ctx.commit(*orgs)
    return {"deleted_organizations": fields["organization_ids"]}


def info(ctx: Context, principal: Principal, org_id: str | None) -> dict[str, Any]:
    if not org_id:
        raise BadRequestError("'organization_id' is required.", param="organization_id", code="missing_field")
    org = ctx.live("organization", org_id)
    if org is None:
        raise NotFoundError(f"Organization {org_id!r} does not exist.", param="organization_id")
    if not (principal.reads_everything or principal.user_id in (org.get("members") or {})):
        raise PermissionDeniedError(f"You are not a member of organization {org_id!r}.", code="not_allowed")
    teams = [public(team) for team in ctx.directory.all("team") if team.get("organization_id") == org_id]
    return {**shown(org), "teams": teams}


def listed(ctx: Context, principal: Principal) -> list[dict[str, Any]]:
    orgs = [org for org in ctx.directory.all("organization")
            if principal.reads_everything or principal.user_id in (org.get("members") or {})]
    return [shown(org) for org in sorted(orgs, key=lambda org: org.get("created_at") or "")]


def member_add(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, {"organization_id": f.text, "member": lambda name, value: value})
    require_admin(principal, "add organization members")
    org = ctx.load(Organization, f.required(fields, "organization_id"), "Organization")
    given = f.required(fields, "member")
    users = []
    for item in given if isinstance(given, list) else [given]:
        member = f.checked(item, f.ORG_MEMBER)
        user_id = member.pop("user_id", None) or member.get("user_email")
        if not user_id:
            raise BadRequestError("A member needs a 'user_id' or a 'user_email'.", param="member")
        if not ctx.exists(User, user_id):
            users.append(User.create(entity_id("user", user_id), {"user_id": user_id, "user_role": "internal_user"},
                                     principal.actor))
        member.pop("user_email", None)
        member.setdefault("role", "internal_user")
        org.record(Organization.OrganizationMemberAdded, user_id=user_id, member=member, actor=principal.actor)
    ctx.commit(*users, org)
    return {"organization_id": org.state["organization_id"], "members": _members(org.state)}


def member_delete(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, {"organization_id": f.text, "user_id": f.text, "user_email": f.text})
    require_admin(principal, "remove organization members")
    org = ctx.load(Organization, f.required(fields, "organization_id"), "Organization")
    user_id = fields.get("user_id") or fields.get("user_email")
    if not user_id or user_id not in (org.state.get("members") or {}):
        raise NotFoundError(f"User {user_id!r} is not a member of organization {org.state['organization_id']!r}.",
                            param="user_id")
    org.record(Organization.OrganizationMemberRemoved, user_id=user_id, actor=principal.actor)
    ctx.commit(org)
    return {"organization_id": org.state["organization_id"], "members": _members(org.state)}


_UNSET = f.defaults(f.ORGANIZATION)


def shown(org: dict[str, Any]) -> dict[str, Any]:
    shown_org = {**_UNSET, **public(org)}
    shown_org["members"] = _members(org)
    return shown_org


def _members(org: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"user_id": user_id, "user_role": member.get("role")} for user_id, member in (org.get("members") or {}).items()]


def _check_budget(ctx: Context, budget_id: str | None) -> None:
    if budget_id and ctx.live("budget", budget_id) is None:
        raise NotFoundError(f"Budget {budget_id!r} does not exist.", param="budget_id")
