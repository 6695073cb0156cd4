"""Reading Lago into the ledger, off the request path (the read side runs it on a schedule).

A round reads, for each customer, the active subscription, its entitlements and the wallet that
pays for the usage, compares them with the customer's stream and appends only what differs (one
save per customer). `run_once` reads every customer the gateway has seen (as `customer_id_from`
names them); `run_due` only those seen but never read, and those a webhook asked to read again.

A stream that another process wrote meanwhile is skipped, not an error: the next round reads it
again. A customer whose stream got news after this round began reading it (a webhook) is skipped
too: that news asks for a read of its own. Each round ends with SyncSucceeded or SyncFailed in the
day's sync log, so every process knows when the last good sync was. Lago unreachable, or refusing
with 401, 403, 404, 429 or 5xx, fails the round (it is tried again next round); a customer Lago
refuses to show (400, 409, 422) is skipped and named in SyncSucceeded. A customer Lago does not
know reads as one with no subscription and no wallet.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Callable, Protocol

from moneta.application.config import LagoSettings
from moneta.application.ports import AggregateReader
from moneta.domain.billing import (
    SCOPE_ALL, SCOPE_DUE, SYNC, LagoCustomer, LagoReading, LagoSyncLog, customer_stream_id, features_state,
    subscription_state, sync_stream_id, usable_wallet, wallet_state,
)
from moneta.domain.redaction import redact

log = logging.getLogger("moneta.lago")
CONCURRENCY = 8  # customers read at once
DUE_BATCH = 500  # customers a due round reads at most
# About one customer; any other refusal is about Lago or how it is reached (a 404 without Lago's
# `customer_not_found` is a wrong api_url, not a customer: the client reads that one as none).
_CUSTOMER_REFUSALS = (400, 409, 422)


class BillingSource(Protocol):
    """Lago's billing API. A refusal raises an exception whose `status` is the HTTP status (None
    when Lago did not answer)."""

    async def active_subscription(self, customer_id: str) -> dict[str, Any] | None: ...

    async def entitlements(self, subscription_external_id: str) -> list[dict[str, Any]]: ...

    async def wallets(self, customer_id: str) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class SyncTargets(Protocol):
    def seen(self, kind: str) -> list[str]:
        """Every id of `kind` (customer, team, user, key) the gateway has seen in a call."""
        ...

    def due(self, kind: str, limit: int) -> list[str]:
        """Ids seen but never read from Lago, and customers a webhook asked to read again."""
        ...


@dataclass
class SyncReport:
    scope: str
    started_at: datetime
    at: datetime | None = None
    customers: int = 0
    changed: int = 0
    refreshed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failure: str | None = None


class LagoSync:
    def __init__(self, settings: LagoSettings, source: BillingSource, targets: SyncTargets, reader: AggregateReader,
                 save: Callable[[Any], bool], *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 concurrency: int = CONCURRENCY) -> None:
        """`save` returns False when the stream moved meanwhile (another process wrote it)."""
        self.settings = settings
        self.source = source
        self.targets = targets
        self.reader = reader
        self.save = save
        self.clock = clock
        self.concurrency = concurrency
        self._log: LagoSyncLog | None = None  # today's sync log, as this process last saved it
        self._recording = asyncio.Lock()
        self._due_pause_s = 0.0
        self._due_paused_until = 0.0  # time.monotonic(): due rounds wait after one failed
        self._skipped_until: dict[str, float] = {}  # customers refused in a due round, not asked again before

    async def run_once(self) -> SyncReport:
        """Reads every customer seen, records what changed, and how the round ended."""
        customers = await asyncio.to_thread(self.targets.seen, self.settings.customer_id_from)
        return await self._round(SCOPE_ALL, customers)

    async def run_due(self) -> SyncReport | None:
        """Reads the customers never read and those asking for a new read; None when there are none
        (nothing is recorded then)."""
        now = time.monotonic()
        if now < self._due_paused_until:
            return None
        due = await asyncio.to_thread(self.targets.due, self.settings.customer_id_from, DUE_BATCH)
        customers = [customer for customer in due if self._skipped_until.get(customer, 0.0) <= now]
        if not customers:
            return None
        report = await self._round(SCOPE_DUE, customers)
        self._pace_due(report, now)
        return report

    def _pace_due(self, report: SyncReport, now: float) -> None:
        for customer in report.skipped:
            self._skipped_until[customer] = now + self.settings.sync_interval_s
        if report.failure is None:
            self._due_pause_s = 0.0
            return
        self._due_pause_s = min(max(self._due_pause_s * 2, 1.0), self.settings.sync_interval_s)
        self._due_paused_until = now + self._due_pause_s

    async def _round(self, scope: str, customers: list[str]) -> SyncReport:
        report = SyncReport(scope, self.clock())
        gate = asyncio.Semaphore(self.concurrency)
        await asyncio.gather(*(self._customer(customer, report, gate) for customer in customers))
        report.at = self.clock()
        if scope == SCOPE_DUE and report.failure is None:
            report.refreshed = sorted(set(customers) - set(report.skipped))
        report.skipped.sort()
        await self._record(report)
        return report

    async def _customer(self, customer_id: str, report: SyncReport, gate: asyncio.Semaphore) -> None:
        async with gate:
            if report.failure is not None:  # the round failed: the rest waits for the next one
                return
            try:
                reading = await self._read(customer_id)
            except Exception as error:
                if getattr(error, "status", None) in _CUSTOMER_REFUSALS:
                    report.skipped.append(customer_id)
                    log.warning("Lago sync: customer %r skipped: %s", customer_id, self._describe(error))
                elif report.failure is None:
                    report.failure = self._describe(error)
                return
        report.customers += 1
        report.changed += await asyncio.to_thread(self._apply, reading)

    async def _read(self, customer_id: str) -> LagoReading:
        at = self.clock()
        found, wallets = await asyncio.gather(self.source.active_subscription(customer_id),
                                              self.source.wallets(customer_id))
        subscription = subscription_state(found)
        entitlements = await self.source.entitlements(subscription["external_id"]) if subscription else []
        wallet = usable_wallet(wallets, self.settings.billable_metric_code)
        return LagoReading(customer_id, subscription, features_state(entitlements),
                           None if wallet is None else wallet_state(wallet, fetched_at=at), at)

    def _apply(self, reading: LagoReading) -> int:
        """1 when the customer's stream got events, else 0."""
        customer = self.reader.get(customer_stream_id(reading.customer_id))
        if customer is None:
            customer = LagoCustomer.track(reading.customer_id, source=SYNC, at=reading.at)
        elif customer.changed_at > reading.at:  # a webhook's news came in while this read was on its way
            return 0
        customer.observe(reading)
        if not customer.pending_events:
            return 0
        return 1 if self.save(customer) else 0

    async def _record(self, report: SyncReport) -> None:
        if report.failure is not None:
            log.warning("Lago sync (%s) failed after %d customer(s): %s", report.scope, report.customers,
                        report.failure)
        async with self._recording:
            await asyncio.to_thread(self._append, report)

    def _append(self, report: SyncReport) -> None:
        assert report.at is not None
        day = report.at.date()
        for _ in range(3):
            sync_log = self._log if self._log is not None and self._log.day == day.isoformat() else \
                self.reader.get(sync_stream_id(day)) or LagoSyncLog.open(day)
            if report.failure is None:
                sync_log.succeeded(scope=report.scope, started_at=report.started_at, at=report.at,
                                   customers=report.customers, changed=report.changed, refreshed=report.refreshed,
                                   skipped=report.skipped)
            else:
                sync_log.failed(scope=report.scope, started_at=report.started_at, at=report.at,
                                reason=report.failure, customers=report.customers, changed=report.changed)
            if self.save(sync_log):
                self._log = sync_log
                return
            self._log = None  # another process wrote the day's log: read it again
        log.error("Lago sync (%s): its outcome could not be recorded (the day's log kept moving)", report.scope)

    def _describe(self, error: BaseException) -> str:
        """What failed, never a credential (Lago's errors name the method, path and status)."""
        text = str(error) or type(error).__name__
        return redact(text, tuple(s for s in (self.settings.api_key, self.settings.webhook_hmac_key) if s))
