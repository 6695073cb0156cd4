"""Delivering budget alerts to the configured webhooks, from the read side, off the request path.

The budget view files each crossing in the alert outbox; each round, the deliverer takes the
alerts due for each webhook, reads the alert's stream in the ledger (the truth: an alert the ledger
says is settled is never sent again, whatever the outbox's schedule says after a rebuild), claims
the attempt, posts, and appends the outcome to the stream: Delivered, DeliveryFailed (with when to
retry) and, after the last attempt or an answer that retrying cannot change, GaveUp.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, Mapping, Protocol

from moneta.application import alert_webhooks
from moneta.application.config import AlertSettings
from moneta.application.ports import AggregateReader
from moneta.domain.budget_alerts import BudgetAlert, alert_stream_id, webhook_label

log = logging.getLogger("moneta.alerts")
_CLAIM_MARGIN_S = 30.0  # a claim outlives the attempt's timeout by this much


class WebhookUnreachable(Exception):
    """No answer came: the message says why (refused, timed out, ...), never the URL."""


class WebhookSender(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        """Posts `body`; returns the answer's status, raises WebhookUnreachable without one."""
        ...

    async def close(self) -> None: ...


class AlertOutbox(Protocol):
    def due(self, webhook: str, now: datetime, limit: int) -> list[dict[str, Any]]:
        """The outbox rows not settled for `webhook` whose next attempt is due."""
        ...

    def claim(self, alert_id: str, webhook: str, now: datetime, until: datetime) -> bool: ...

    def record(self, alert_id: str, webhook: str, *, attempts: int, next_attempt_at: datetime | None,
               settled: str | None, last_status: int | None = None, last_error: str | None = None) -> None: ...


def is_retryable(status: int | None) -> bool:
    return status is None or status in (408, 425, 429) or status >= 500


class AlertDelivery:
    def __init__(self, settings: AlertSettings, outbox: AlertOutbox, reader: AggregateReader,
                 save: Callable[[BudgetAlert], bool], sender: WebhookSender, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 jitter: Callable[[], float] = random.random, batch: int = 50) -> None:
        """`save` returns False when the stream moved meanwhile (another deliverer wrote it)."""
        self.settings = settings
        self.outbox = outbox
        self.reader = reader
        self.save = save
        self.sender = sender
        self.clock = clock
        self.jitter = jitter
        self.batch = batch

    async def deliver_due(self) -> int:
        """One round over every webhook; returns how many attempts it made."""
        attempts = 0
        for url in self.settings.webhook_urls:
            label = webhook_label(url)
            for row in self.outbox.due(label, self.clock(), self.batch):
                attempts += await self._deliver(row, url, label)
        return attempts

    async def _deliver(self, row: dict[str, Any], url: str, label: str) -> int:
        alert = self.reader.get(alert_stream_id(row["alert_id"])) or _raised(row)
        if alert.is_settled(label):  # the schedule had not caught up with the ledger
            self._mirror(alert, label)
            return 0
        now = self.clock()
        if not self.outbox.claim(alert.alert_id, label, now, now + timedelta(seconds=self._claim_s())):
            return 0
        status, error = await self._post(alert, url, now)
        self._note(alert, label, status, error)
        if self.save(alert):
            self._mirror(alert, label)
        return 1

    async def _post(self, alert: BudgetAlert, url: str, now: datetime) -> tuple[int | None, str]:
        raw = alert_webhooks.body(alert)
        headers = alert_webhooks.headers(alert.alert_id, raw, self.settings.webhook_secret, int(now.timestamp()))
        try:
            status = await self.sender.post(url, raw, headers, self.settings.timeout_s)
        except WebhookUnreachable as unreachable:
            return None, str(unreachable)
        return status, "" if 200 <= status < 300 else f"HTTP {status}"

    def _note(self, alert: BudgetAlert, label: str, status: int | None, error: str) -> None:
        if not error:
            alert.delivered(label, status)
            return
        attempt = alert.delivery(label).attempts + 1
        last = attempt >= self.settings.max_attempts or not is_retryable(status)
        alert.failed(label, status=status, error=error, retry_at=None if last else self.clock() + self._backoff(attempt))
        log.warning("budget alert %s to %s: attempt %d failed (%s)", alert.alert_id, label, attempt, error)
        if last:
            reason = f"{attempt} attempt(s) failed" if is_retryable(status) else f"HTTP {status} is not retried"
            alert.give_up(label, reason)
            log.error("budget alert %s to %s: gave up (%s)", alert.alert_id, label, reason)

    def _backoff(self, attempt: int) -> timedelta:
        """Doubling from backoff_s, capped, then jittered down to half so that retries spread."""
        delay = min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** (attempt - 1))
        return timedelta(seconds=delay * (0.5 + self.jitter() / 2))

    def _claim_s(self) -> float:
        return self.settings.timeout_s + _CLAIM_MARGIN_S

    def _mirror(self, alert: BudgetAlert, label: str) -> None:
        delivery = alert.delivery(label)
        self.outbox.record(alert.alert_id, label, attempts=delivery.attempts, next_attempt_at=delivery.retry_at,
                           settled=delivery.settled, last_status=delivery.status, last_error=delivery.error or None)


def _raised(row: dict[str, Any]) -> BudgetAlert:
    return BudgetAlert.raise_alert(alert_id=row["alert_id"], scope=row["scope"], period=row["period"],
                                   kind=row["kind"], threshold=row["threshold"], spend=row["spend"],
                                   limit=row["budget_limit"], resets_at=row["resets_at"],
                                   request_id=row["request_id"], crossed_at=row["crossed_at"])


class BackgroundDelivery:
    """Runs delivery rounds every `interval_s` in a thread (and event loop) of its own, so that a
    slow webhook never holds up the projections."""

    def __init__(self, delivery: AlertDelivery, interval_s: float = 1.0, max_pause_s: float = 30.0) -> None:
        self.delivery = delivery
        self.interval_s = interval_s
        self.max_pause_s = max_pause_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="moneta-budget-alerts",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    async def _run(self) -> None:
        pause = self.interval_s
        try:
            while not self._stopping.is_set():
                try:
                    await self.delivery.deliver_due()
                    pause = self.interval_s
                except Exception:  # the ledger or the views unreachable: the next round tries again
                    pause = min(pause * 2, self.max_pause_s)
                    log.exception("delivering budget alerts failed; retrying in %.1fs", pause)
                await self._pause(pause)
        finally:
            await self.delivery.sender.close()

    async def _pause(self, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._stopping.is_set() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(min(0.05, seconds))
