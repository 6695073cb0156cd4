"""Whether a customer may make a call, from what the gateway last synced from Lago (no I/O).

Entitled: an active subscription; when an entitlement feature is configured, the subscription holds
it; when that feature has a `models` privilege, the call's model group is in its comma-separated
list. Whether the customer can pay is the wallet's part: the balance Lago last computed, less what
this gateway admitted since Lago computed it, less what calls in flight hold (see `wallet_limit`).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

ACTIVE = "active"
MODELS_PRIVILEGE = "models"


@dataclass(frozen=True)
class Verdict:
    entitled: bool
    reason: str  # why not ("" when entitled)
    facts: dict[str, Any]  # what the decision used, for the call's ledger events


def judge(customer_id: str, billing: Any, feature: str | None, model_group: str) -> Verdict:
    """`billing` is the customer's `CustomerBilling` (None: nothing known from Lago)."""
    facts: dict[str, Any] = {"customer": customer_id}
    if billing is None or not billing.subscription_id or billing.subscription_status != ACTIVE:
        return Verdict(False, f"customer {customer_id!r} has no active subscription in Lago", facts)
    facts.update(subscription=billing.subscription_id, plan=billing.plan_code)
    if feature is None:
        return Verdict(True, "", facts)
    privileges = billing.features.get(feature)
    facts["feature"] = feature
    if privileges is None:
        return Verdict(False, f"the subscription of customer {customer_id!r} does not include {feature!r}", facts)
    allowed = models_allowed(privileges)
    if allowed is not None:
        facts["models_allowed"] = sorted(allowed)
        if model_group not in allowed:
            return Verdict(False, f"{feature!r} does not include the model {model_group!r} for customer"
                                  f" {customer_id!r}", facts)
    return Verdict(True, "", facts)


def models_allowed(privileges: Mapping[str, Any]) -> frozenset[str] | None:
    """The model groups a feature's `models` privilege lists (None: the privilege is absent)."""
    value = privileges.get(MODELS_PRIVILEGE)
    if value is None or value == "":
        return None
    return frozenset(name.strip() for name in str(value).split(",") if name.strip())


def wallet_limit(balance_usd: Decimal, spent_before: Decimal) -> Decimal:
    """The limit of the wallet's budget line, whose counter holds everything the gateway ever charged
    to the wallet: Lago's balance plus what was charged before Lago computed it. The headroom is then
    balance − (charged since it was computed) − held by calls in flight."""
    return max(Decimal(0), balance_usd) + spent_before
