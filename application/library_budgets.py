"""The end users' budgets in the library (what `moneta.BudgetManager` sets): a customer's
`max_budget` over its `budget_duration`, reserved by library calls that name the `user` and by
`check_budget` for calls made elsewhere, charged in the ledger as every call is.

The counters are shared by every process on the ledger (see `infrastructure.budgets_database`),
and each end user is read from the ledger at every reservation: a budget created or reset by
another process a moment ago is the one in force.
"""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Callable, Sequence

from moneta.application.access_directory import Directory
from moneta.application.budget_check import BudgetSettings, Budgets, Reservation
from moneta.application.budget_store import BudgetStore
from moneta.application.config import Deployment
from moneta.application.management.context import AccessStore
from moneta.application.ports import PriceBook, Tokenizer
from moneta.domain.access import entity_id
from moneta.domain.budgets import BudgetLine, to_nanos
from moneta.domain.request_record import RequestRecord

Group = Callable[[str], Sequence[Deployment]]  # a model's deployments, to price a call


class LibraryBudgets:
    def __init__(self, store: BudgetStore, access: AccessStore, prices: PriceBook, tokenizer: Tokenizer) -> None:
        self.store = store
        self.prices = prices
        self.tokenizer = tokenizer
        self._access = access
        self._directory = Directory()

    def customer(self, user: str) -> dict[str, Any] | None:
        """The end user as the ledger holds it now (None when unknown or deleted)."""
        stored = self._access.get(entity_id("customer", user))
        if stored is None or stored.is_deleted:
            return None
        self._directory.put("customer", user, stored.state)
        return self._directory.live("customer", user)

    def budgets(self, group: Group) -> Budgets:
        return Budgets(self.store, self._directory, self.prices, self.tokenizer, group, BudgetSettings())

    async def lines(self, user: str, model: str, now: datetime) -> list[BudgetLine]:
        """The user's budget in its period now (none when the user has no budget)."""
        if not user or await asyncio.to_thread(self.customer, user) is None:
            return []
        return self.budgets(lambda _: ()).lines(None, model, user, now)

    async def reserve(self, request_id: str, user: str, call_type: str, call: dict[str, Any], group: Group,
                      audio_bytes: int = 0) -> Reservation | None:
        """The call's reservation on the user's budget (None when the user has none);
        BudgetRefused (429) when it does not fit."""
        now = datetime.now(UTC)
        lines = await self.lines(user, call["model"], now)
        if not lines:
            return None
        return await self.budgets(group).check_budget(request_id, lines, call_type, call, now, audio_bytes)

    def settler(self, request_id: str, reservation: Reservation) -> Callable[[RequestRecord], None]:
        return self.budgets(lambda _: ()).settler(request_id, reservation)

    async def release(self, request_id: str, reservation: Reservation) -> None:
        """Frees a reservation whose call charged itself (or never happened)."""
        await self.store.settle(request_id, reservation.lines, 0, datetime.now(UTC).timestamp())

    async def charge_after(self, request_id: str, user: str, model: str, cost: Decimal) -> dict[str, Any]:
        """A spend made without a reservation (told after the fact): counted on the user's budget
        whatever its headroom, since it happened. Returns what the counters showed, for the ledger."""
        now = datetime.now(UTC)
        lines = await self.lines(user, model, now)
        if not lines:
            return {}
        seen = await self.store.reserve(request_id, lines, 0, 0, now.timestamp())  # reads (and starts) the counters
        await self.store.settle(request_id, lines, to_nanos(cost, up=True), now.timestamp())
        return {**seen.as_event(), "allowed": True, "after_the_fact": True}
