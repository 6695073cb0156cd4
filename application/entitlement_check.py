"""The entitlement step of admission (`check_entitlement()`), from local state only: what the gateway
last synced from Lago (the billing directory) and the ledger's own wallet spend. Lago is never asked.

A call needs an entitled customer (see `domain.entitlement`) and, when the customer has a prepaid
wallet, a wallet that covers its reservation. The wallet is one more budget line, `wallet:<customer>`,
reserved and settled with the call's other budgets, all or nothing (so that 100 concurrent calls
cannot spend one balance twice); its counter holds everything the gateway ever charged to the wallet,
and its limit is Lago's balance plus what had been charged before Lago computed that balance.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Protocol

from moneta.application.config import LagoSettings
from moneta.application.principal import Principal
from moneta.domain.budgets import BudgetLine, Headroom, from_nanos, to_nanos
from moneta.domain.entitlement import judge, wallet_limit
from moneta.domain.errors import EntitlementDeniedError, InsufficientQuotaError, ServiceUnavailableError

WALLET_SCOPE = "wallet:"
LIFETIME = "lifetime"
_MAX_BASELINES = 100_000


class BillingDirectory(Protocol):
    def customer(self, customer_id: str) -> Any: ...  # CustomerBilling | None

    def stale(self, now: datetime) -> bool: ...


class WalletSpend(Protocol):
    def spent_before(self, scope: str, moment: datetime) -> Decimal:
        """What the ledger charged to the wallet scope for calls admitted before `moment` (the budget
        view's wallet spend by minute of admission: a call of the same minute counts as after).
        Blocking: call it in a thread."""
        ...


@dataclass(frozen=True)
class Entitlement:
    customer: str
    facts: dict[str, Any]  # for the call's Admitted or Denied event
    wallet: BudgetLine | None  # reserved with the call's budgets; None: no prepaid wallet


@dataclass
class Entitlements:
    settings: LagoSettings
    billing: BillingDirectory
    spend: WalletSpend
    askii: Callable[[Decimal, datetime], tuple[Decimal, Decimal]]  # usd, at -> (askii, rate)
    _baselines: dict[tuple[str, datetime], "asyncio.Future[Decimal]"] = field(default_factory=dict)

    def customer_for(self, principal: Principal | None, end_user: str, key_hash: str) -> str:
        """The Lago customer (`external_customer_id`) a call bills, as `customer_id_from` says."""
        source = self.settings.customer_id_from
        if source == "customer":
            return end_user
        if source == "key":
            return key_hash
        if principal is None:
            return ""
        return (principal.team_id if source == "team" else principal.user_id) or ""

    async def check(self, principal: Principal | None, end_user: str, key_hash: str, model_group: str,
                    now: datetime) -> Entitlement:
        """EntitlementDeniedError (403) when not entitled; ServiceUnavailableError (503) when the
        billing state is too old and `on_unreachable` is deny."""
        customer = self.customer_for(principal, end_user, key_hash)
        stale = self.billing.stale(now)
        if stale and self.settings.on_unreachable == "deny":
            raise ServiceUnavailableError(
                "Billing state from Lago is out of date; the call cannot be authorised right now.",
                code="entitlement_unverifiable")
        if not customer:
            hint = " (send `user` or the x-litellm-end-user-id header)" if self.settings.customer_id_from == "customer" else ""
            raise NotEntitled(f"This call names no Lago customer: the gateway bills by"
                              f" {self.settings.customer_id_from}{hint}.", {"customer": ""})
        billing = self.billing.customer(customer)
        verdict = judge(customer, billing, self.settings.entitlement_feature, model_group)
        facts = {**verdict.facts, "stale": stale}
        if not verdict.entitled:
            raise NotEntitled(f"Not entitled: {verdict.reason}.", facts)
        wallet = billing.wallet
        if wallet is None:
            return Entitlement(customer, facts, None)
        scope = WALLET_SCOPE + customer
        before = await self._spent_before(scope, wallet.computed_at)
        limit = wallet_limit(wallet.balance_usd, before)
        balance_askii, rate = self.askii(wallet.balance_usd, now)
        facts["wallet"] = {"wallet_id": wallet.wallet_id, "balance_usd": str(wallet.balance_usd),
                           "balance_askii": str(balance_askii), "askii_rate": str(rate),
                           "computed_at": wallet.computed_at.isoformat(), "charged_before_usd": str(before)}
        return Entitlement(customer, facts, BudgetLine(scope, LIFETIME, to_nanos(limit, up=False), None))

    async def _spent_before(self, scope: str, moment: datetime) -> Decimal:
        """Once per wallet balance Lago computed: concurrent calls share the one query."""
        known = (scope, moment)
        future = self._baselines.get(known)
        if future is None or (future.done() and future.exception() is not None):
            if len(self._baselines) >= _MAX_BASELINES:
                self._baselines.clear()
            future = self._baselines[known] = asyncio.ensure_future(
                asyncio.to_thread(self.spend.spent_before, scope, moment))
        return await asyncio.shield(future)


def is_wallet(scope: str) -> bool:
    return scope.startswith(WALLET_SCOPE)


def out_of_credit(entitlement: Entitlement, refused: Headroom) -> InsufficientQuotaError:
    """The 429 of a wallet that cannot cover the call, with the numbers that decided it."""
    wallet = entitlement.facts["wallet"]
    since = from_nanos(refused.spent) - Decimal(wallet["charged_before_usd"])
    left = from_nanos(refused.line.limit - refused.spent - refused.reserved)
    return InsufficientQuotaError(
        f"You exceeded your current quota: the prepaid wallet of customer {entitlement.customer!r} held"
        f" {wallet['balance_usd']} USD ({wallet['balance_askii']} askii) when Lago computed it at"
        f" {wallet['computed_at']}; {since.normalize()} USD was charged since and"
        f" {from_nanos(refused.reserved).normalize()} USD is held by calls in flight, which leaves"
        f" {max(left, Decimal(0)).normalize()} USD: not enough for this call.")


class NotEntitled(EntitlementDeniedError):
    """A 403 with what the decision used (for the Denied event)."""

    def __init__(self, message: str, facts: dict[str, Any]) -> None:
        super().__init__(message)
        self.facts = facts
