"""What each gateway worker knows of Lago, in memory, for the entitlement check: every customer's
subscription, entitlements and wallet, and when the last good sync was. It never waits on Lago or
the database on a call's path: `BillingDirectorySync` rereads what the billing view changed about
every 250 ms, in the background.

A customer's `synced_at` is when Lago's API last confirmed its state: the latest read of it, or
the last good full round (which reads every customer seen), unless that round skipped it.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Mapping, Protocol

from moneta.domain.billing import CustomerBilling, Wallet

log = logging.getLogger("moneta.lago")
INTERVAL_S = 0.25


class BillingView(Protocol):
    def customers_changed_since(self, revision: int) -> list[dict[str, Any]]:
        """Rows (customer_id, subscription, features, wallet, synced_at, revision) changed after
        `revision`, oldest change first."""
        ...

    def sync_status(self) -> dict[str, Any] | None:
        """full_started_at, full_skipped, last_success_at, last_failure_at, last_failure_reason, ..."""
        ...


class BillingDirectory:
    def __init__(self, max_staleness_s: float, on_unreachable: str) -> None:
        self.max_staleness_s = max_staleness_s
        self.on_unreachable = on_unreachable  # "deny" | "allow": what the check does when stale
        self.version = 0  # grows whenever what the directory holds changes
        self.revision = 0  # the view's revision read so far
        self.status: Mapping[str, Any] = {}
        self._customers: dict[str, CustomerBilling] = {}
        self._confirmed: dict[str, datetime] = {}  # the latest read of each customer
        self._wallets: dict[str, str] = {}  # wallet lago_id -> customer id

    def customer(self, customer_id: str) -> CustomerBilling | None:
        """None for a customer never read from Lago (not seen yet, or seen this very second)."""
        return self._customers.get(customer_id)

    @property
    def last_sync_at(self) -> datetime | None:
        """When the last good full round began reading: everything it read is at least this fresh."""
        return self.status.get("full_started_at")

    def stale(self, now: datetime | None = None) -> bool:
        """No good sync within max_staleness_s (or none ever)."""
        last = self.last_sync_at
        return last is None or (now or datetime.now(UTC)) - last > timedelta(seconds=self.max_staleness_s)

    def holders(self, feature_code: str) -> list[str]:
        """The customers whose subscription holds the feature."""
        return sorted(c.customer_id for c in self._customers.values() if feature_code in c.features)

    def customer_of_wallet(self, wallet_id: str) -> str | None:
        return self._wallets.get(wallet_id)

    def apply(self, rows: list[dict[str, Any]], status: Mapping[str, Any] | None) -> None:
        for row in rows:
            self._customers[row["customer_id"]] = _billing(row)
            self._confirmed[row["customer_id"]] = row["synced_at"]
            wallet = row["wallet"] or {}
            if wallet.get("lago_id"):
                self._wallets[wallet["lago_id"]] = row["customer_id"]
            self.revision = max(self.revision, row["revision"])
        status = status or {}
        full_round_moved = (status.get("full_started_at"), status.get("full_skipped")) != \
            (self.status.get("full_started_at"), self.status.get("full_skipped"))
        self.status = MappingProxyType(dict(status))
        if full_round_moved:
            changed = self._customers
        else:
            changed = {row["customer_id"]: self._customers[row["customer_id"]] for row in rows}
        for customer_id, billing in changed.items():
            self._customers[customer_id] = replace(billing, synced_at=self._synced_at(customer_id))
        if rows or full_round_moved:
            self.version += 1

    def _synced_at(self, customer_id: str) -> datetime:
        confirmed = self._confirmed[customer_id]
        full = self.status.get("full_started_at")
        if full is None or full <= confirmed or customer_id in (self.status.get("full_skipped") or ()):
            return confirmed
        return full


def _billing(row: Mapping[str, Any]) -> CustomerBilling:
    subscription = row["subscription"] or {}
    features = {code: MappingProxyType(dict(privileges)) for code, privileges in (row["features"] or {}).items()}
    return CustomerBilling(customer_id=row["customer_id"], subscription_id=subscription.get("external_id"),
                           plan_code=subscription.get("plan_code"), subscription_status=subscription.get("status"),
                           features=MappingProxyType(features), wallet=_wallet(row["wallet"]),
                           synced_at=row["synced_at"])


def _wallet(wallet: Mapping[str, Any] | None) -> Wallet | None:
    if not wallet:
        return None
    computed_at = wallet["computed_at"]
    return Wallet(wallet_id=wallet["lago_id"], currency=wallet["currency"],
                  balance_usd=Decimal(str(wallet["balance_usd"])),
                  computed_at=computed_at if isinstance(computed_at, datetime) else datetime.fromisoformat(computed_at),
                  depleted=bool(wallet["depleted"]))


class BillingDirectorySync:
    """Keeps a worker's billing directory fresh (as DirectorySync does the access directory)."""

    def __init__(self, directory: BillingDirectory, view: BillingView, interval_s: float = INTERVAL_S) -> None:
        self.directory = directory
        self._view = view
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def load(self) -> None:
        """Reads what changed since the last read (all of it at start-up, before the first request)."""
        self.directory.apply(*self._read())

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                rows, status = await asyncio.to_thread(self._read)
            except Exception as error:  # the view's database is down: keep serving from memory
                if not self._failing:
                    log.warning("billing view unreadable (%s); Lago's state as last read", type(error).__name__)
                self._failing = True
                continue
            self._failing = False
            self.directory.apply(rows, status)

    def _read(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        return self._view.customers_changed_since(self.directory.revision), self._view.sync_status()
