"""The fields each management route takes, as LiteLLM names them, and their checks.

A field the route does not know is refused with a 400 naming it; a value of the wrong kind is
refused naming the field and what it must be. `None` means "not set" for every optional field.
"""
from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from moneta.domain.access import MEMBER_ROLES, ORG_ROLES, USER_ROLES, duration_seconds
from moneta.domain.errors import BadRequestError

Check = Callable[[str, Any], Any]


def _fail(name: str, expected: str) -> BadRequestError:
    return BadRequestError(f"'{name}' must be {expected}.", param=name, code="invalid_field")


def text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 256 or "\x00" in value:
        raise _fail(name, "a non-empty string of at most 256 characters")
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, "true or false")
    return value


def count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(name, "a whole number, 0 or more")
    return value


def money(name: str, value: Any) -> Decimal:
    """USD as an exact decimal; a JSON number is read from its shortest text, never through float error."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(name, "an amount in USD (a number, 0 or more)")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(name, "a finite amount in USD")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise _fail(name, "an amount in USD (a number, 0 or more)") from None
    if not amount.is_finite() or amount < 0:
        raise _fail(name, "an amount in USD (a finite number, 0 or more)")
    return amount


def duration(name: str, value: Any) -> str:
    try:
        duration_seconds(value)
    except ValueError as error:
        raise _fail(name, str(error)) from None
    return value


def moment(name: str, value: Any) -> str:
    """An ISO 8601 time with its offset (naive times are taken as UTC), kept as text."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise _fail(name, "an ISO 8601 time, e.g. '2026-12-31T23:59:00Z'")
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()


def texts(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > 1000:
        raise _fail(name, "a list of strings")
    return [text(name, item) for item in value]


def mapping(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _fail(name, "a JSON object")
    return value


def counts_by_model(name: str, value: Any) -> dict[str, int]:
    return {model: count(f"{name}.{model}", limit) for model, limit in mapping(name, value).items()}


def names_by_name(name: str, value: Any) -> dict[str, str]:
    return {alias: text(f"{name}.{alias}", target) for alias, target in mapping(name, value).items()}


def budgets_by_model(name: str, value: Any) -> dict[str, Any]:
    """`{model: amount}` or LiteLLM's `{model: {"budget_limit": amount, "time_period": "1d"}}`."""
    checked: dict[str, Any] = {}
    for model, budget in mapping(name, value).items():
        if isinstance(budget, dict):
            unknown = set(budget) - {"budget_limit", "time_period"}
            if unknown or "budget_limit" not in budget:
                raise _fail(f"{name}.{model}", "an amount or {\"budget_limit\": amount, \"time_period\": duration}")
            checked[model] = {"budget_limit": money(f"{name}.{model}.budget_limit", budget["budget_limit"])}
            if budget.get("time_period") is not None:
                checked[model]["time_period"] = duration(f"{name}.{model}.time_period", budget["time_period"])
        else:
            checked[model] = {"budget_limit": money(f"{name}.{model}", budget)}
    return checked


def one_of(*choices: str) -> Check:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise _fail(name, "one of " + ", ".join(repr(choice) for choice in choices))
        return value
    return check


LIMITS = {"tpm_limit": count, "rpm_limit": count, "max_parallel_requests": count}
BUDGET = {"max_budget": money, "soft_budget": money, "budget_duration": duration}

KEY = {
    "key_alias": text, "models": texts, **BUDGET, "model_max_budget": budgets_by_model, **LIMITS,
    "model_rpm_limit": counts_by_model, "model_tpm_limit": counts_by_model, "metadata": mapping,
    "duration": duration, "team_id": text, "user_id": text, "blocked": flag, "aliases": names_by_name,
    "budget_id": text, "temp_budget_increase": money, "temp_budget_expiry": moment,
}
TEAM = {
    "team_id": text, "team_alias": text, "models": texts, **BUDGET, **LIMITS, "metadata": mapping,
    "blocked": flag, "organization_id": text, "members_with_roles": lambda name, value: value,
}
USER = {
    "user_id": text, "user_email": text, "user_alias": text, "user_role": one_of(*USER_ROLES), "teams": texts,
    "models": texts, **BUDGET, **LIMITS, "metadata": mapping, "auto_create_key": flag, "key_alias": text,
    "duration": duration,
}
ORGANIZATION = {
    "organization_id": text, "organization_alias": text, "models": texts, **BUDGET, **LIMITS, "metadata": mapping,
    "budget_id": text,
}
CUSTOMER = {
    "user_id": text, "alias": text, "blocked": flag, **BUDGET, **LIMITS, "budget_id": text,
    "model_max_budget": budgets_by_model,
}
BUDGET_FIELDS = {"budget_id": text, **BUDGET, **LIMITS, "model_max_budget": budgets_by_model}
MEMBER = {"user_id": text, "user_email": text, "role": one_of(*MEMBER_ROLES), "max_budget_in_team": money}
ORG_MEMBER = {"user_id": text, "user_email": text, "role": one_of(*ORG_ROLES)}


def defaults(fields: dict[str, Check], *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each field unset, as LiteLLM shows it: an empty list or object, else null."""
    empty: dict[Check, type] = {texts: list, mapping: dict, counts_by_model: dict, names_by_name: dict,
                                budgets_by_model: dict}
    return {name: empty[check]() if check in empty else None for name, check in fields.items() if name not in leave_out}


def checked(body: Any, fields: dict[str, Check], *, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body's known fields, checked; `extra` names fields the route reads itself (e.g. `key`)."""
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    unknown = sorted(set(body) - set(fields) - set(extra))
    if unknown:
        raise BadRequestError(f"Unknown field(s): {', '.join(unknown)}.", param=unknown[0], code="unknown_field")
    return {name: fields[name](name, value) for name, value in body.items() if name in fields and value is not None}


def required(body: dict[str, Any], name: str) -> Any:
    if body.get(name) in (None, "", []):
        raise BadRequestError(f"'{name}' is required.", param=name, code="missing_field")
    return body[name]
