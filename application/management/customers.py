"""/customer/new|update|delete|info|list|block|unblock: the end users named by a call's `user`."""
from __future__ import annotations

from typing import Any

from moneta.application import access_fields as f
from moneta.application.management.context import Context, public, require_admin, require_reader
from moneta.application.principal import Principal
from moneta.domain.access import Customer, entity_id
from moneta.domain.errors import BadRequestError, ConflictError, NotFoundError


def new(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, f.CUSTOMER)
    require_admin(principal, "create a customer")
    user_id = f.required(fields, "user_id")
    if ctx.exists(Customer, user_id):
        raise ConflictError(f"Customer {user_id!r} exists (or existed: an id is never reused).", param="user_id",
                            code="customer_exists")
    _check_budget(ctx, fields.get("budget_id"))
    customer = Customer.create(entity_id("customer", user_id), fields, principal.actor)
    ctx.commit(customer)
    return shown(customer.state)


def first_use(user_id: str, default_budget_id: str | None) -> Customer:
    """The customer an unknown end user becomes on its first call."""
    fields: dict[str, Any] = {"user_id": user_id}
    if default_budget_id:
        fields["budget_id"] = default_budget_id
    return Customer.create(entity_id("customer", user_id), fields, "first_use")


def update(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, f.CUSTOMER)
    require_admin(principal, "update a customer")
    customer = ctx.load(Customer, f.required(fields, "user_id"), "Customer")
    _check_budget(ctx, fields.get("budget_id"))
    changes = {name: value for name, value in fields.items() if name != "user_id"}
    blocked = changes.pop("blocked", None)
    if changes:
        customer.record(Customer.CustomerUpdated, changes=changes, actor=principal.actor)
    if blocked is not None and blocked != customer.state.get("blocked"):
        customer.record(Customer.CustomerBlocked if blocked else Customer.CustomerUnblocked, actor=principal.actor)
    ctx.commit(customer)
    return shown(customer.state)


def set_blocked(ctx: Context, principal: Principal, body: Any, blocked: bool) -> dict[str, Any]:
    fields = f.checked(body, {"user_ids": f.texts})
    require_admin(principal, "block or unblock customers")
    customers = [ctx.load(Customer, user_id, "Customer") for user_id in f.required(fields, "user_ids")]
    for customer in customers:
        if customer.state.get("blocked") != blocked:
            customer.record(Customer.CustomerBlocked if blocked else Customer.CustomerUnblocked, actor=principal.actor)
    ctx.commit(*customers)
    return {"blocked_users" if blocked else "unblocked_users": fields["user_ids"]}


def delete(ctx: Context, principal: Principal, body: Any) -> dict[str, Any]:
    fields = f.checked(body, {"user_ids": f.texts})
    require_admin(principal, "delete customers")
    customers = [ctx.load(Customer, user_id, "Customer") for user_id in f.required(fields, "user_ids")]
    for customer in customers:
        customer.record(Customer.CustomerDeleted, actor=principal.actor)
    ctx.commit(*customers)
    return {"deleted_customers": fields["user_ids"]}


def info(ctx: Context, principal: Principal, end_user_id: str | None) -> dict[str, Any]:
    require_reader(principal, "read customers")
    if not end_user_id:
        raise BadRequestError("'end_user_id' is required.", param="end_user_id", code="missing_field")
    customer = ctx.live("customer", end_user_id)
    if customer is None:
        raise NotFoundError(f"Customer {end_user_id!r} does not exist.", param="end_user_id")
    return {**shown(customer), "spend": ctx.spend("end_user", end_user_id)}


def listed(ctx: Context, principal: Principal) -> list[dict[str, Any]]:
    require_reader(principal, "list customers")
    return [shown(customer) for customer in sorted(ctx.directory.all("customer"),
                                                    key=lambda customer: customer.get("created_at") or "")]


def _check_budget(ctx: Context, budget_id: str | None) -> None:
    if budget_id and ctx.live("budget", budget_id) is None:
        raise NotFoundError(f"Budget {budget_id!r} does not exist.", param="budget_id")


_UNSET = f.defaults(f.CUSTOMER)


def shown(customer: dict[str, Any]) -> dict[str, Any]:
    return {**_UNSET, **public(customer)}
