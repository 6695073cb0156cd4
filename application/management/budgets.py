"""/budget/new|update|info|list|delete: budgets that customers, organizations and keys refer to by `budget_id`."""
from __future__ import annotations

import uuid
from typing import Any

from moneta.application import access_fields as f
from moneta.application.management.context import Context, public, require_admin, require_reader
from moneta.application.principal import Principal
from moneta.domain.access import Budget, entity_id
from moneta.domain.errors import ConflictError, NotFoundError


def new(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, f.BUDGET_FIELDS)
    require_admin(principal, "create a budget")
    budget_id = fields.setdefault("budget_id", uuid.uuid4().hex)
    if ctx.exists(Budget, budget_id):
        raise ConflictError(f"Budget {budget_id!r} exists (or existed: an id is never reused).", param="budget_id",
                            code="budget_exists")
    budget = Budget.create(entity_id("budget", budget_id), fields, principal.actor)
    ctx.commit(budget)
    return shown(budget.state)


def update(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, f.BUDGET_FIELDS)
    require_admin(principal, "update a budget")
    budget = ctx.load(Budget, f.required(fields, "budget_id"), "Budget")
    changes = {name: value for name, value in fields.items() if name != "budget_id"}
    if changes:
        budget.record(Budget.BudgetUpdated, changes=changes, actor=principal.actor)
        ctx.commit(budget)
    return shown(budget.state)


def info(ctx: Context, principal: Principal, body: Any) -> list[dict[str, Any]]:
    fields = f.checked(body, {"budgets": f.texts})
    require_reader(principal, "read budgets")
    found = []
    for budget_id in f.required(fields, "budgets"):
        budget = ctx.live("budget", budget_id)
        if budget is None:
            raise NotFoundError(f"Budget {budget_id!r} does not exist.", param="budgets")
        found.append(shown(budget))
    return found


def listed(ctx: Context, principal: Principal) -> list[dict[str, Any]]:
    require_reader(principal, "list budgets")
    return [shown(budget) for budget in sorted(ctx.directory.all("budget"),
                                                key=lambda budget: budget.get("created_at") or "")]


def delete(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, {"id": f.text})
    require_admin(principal, "delete a budget")
    budget = ctx.load(Budget, f.required(fields, "id"), "Budget")
    users = [f"{kind} {entity.get(field)!r}" for kind, field in (("customer", "user_id"), ("organization",
             "organization_id"), ("key", "key_alias")) for entity in ctx.directory.all(kind)
             if entity.get("budget_id") == fields["id"]]
    if users:
        raise ConflictError(f"Budget {fields['id']!r} is in use by {', '.join(users)}.", param="id",
                            code="budget_in_use")
    budget.record(Budget.BudgetDeleted, actor=principal.actor)
    ctx.commit(budget)
    return shown(budget.state)


_UNSET = f.defaults(f.BUDGET_FIELDS)


def shown(budget: dict[str, Any]) -> dict[str, Any]:
    return {**_UNSET, **public(budget)}
