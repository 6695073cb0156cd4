"""One event stream per budget alert: the crossing, then each webhook delivery's outcome.

The stream's id derives from the alert's id ("scope|period|kind"), so however often the alert
is taken from the outbox, it has one stream. A webhook is named in events by its label (origin
and a digest of the whole URL): a webhook URL may carry a credential in its path (Slack's do).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from urllib.parse import urlsplit
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

_NAMESPACE = UUID("0b7c6a52-2f0e-4c8e-9a3d-6d6f6e657461")
DELIVERED, GAVE_UP = "delivered", "gave_up"


def alert_stream_id(alert_id: str) -> UUID:
    return uuid5(_NAMESPACE, alert_id)


def webhook_label(url: str) -> str:
    """`https://hooks.example.com#1a2b3c4d`: where it goes, never what authorises it."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}#{hashlib.sha256(url.encode()).hexdigest()[:8]}"


@dataclass
class WebhookDelivery:
    """How delivery to one webhook stands."""

    attempts: int = 0
    status: int | None = None  # of the last attempt (None: no answer)
    error: str = ""  # of the last attempt ("" once delivered)
    retry_at: datetime | None = None
    settled: str | None = None  # DELIVERED or GAVE_UP


class BudgetAlert(Aggregate):
    class Raised(Aggregate.Created):
        alert_id: str
        scope: str
        period: str
        kind: str  # "soft_budget" or "max_budget"
        threshold: Decimal
        spend: Decimal  # the budget's spend in the period once the crossing call was charged
        limit: Decimal
        resets_at: str | None
        request_id: str  # the call whose cost crossed the threshold
        crossed_at: datetime

    class Delivered(Aggregate.Event):
        webhook: str
        attempt: int
        status: int

        def apply(self, aggregate: "BudgetAlert") -> None:
            aggregate.deliveries[self.webhook] = WebhookDelivery(self.attempt, self.status, "", None, DELIVERED)

    class DeliveryFailed(Aggregate.Event):
        webhook: str
        attempt: int
        status: int | None  # None: no answer (connection refused, timeout, ...)
        error: str
        retry_at: datetime | None  # None: this failure is the last (see GaveUp)

        def apply(self, aggregate: "BudgetAlert") -> None:
            aggregate.deliveries[self.webhook] = WebhookDelivery(self.attempt, self.status, self.error, self.retry_at)

    class GaveUp(Aggregate.Event):
        webhook: str
        attempts: int
        reason: str

        def apply(self, aggregate: "BudgetAlert") -> None:
            aggregate.delivery(self.webhook).settled = GAVE_UP

    @classmethod
    def raise_alert(cls, *, alert_id: str, scope: str, period: str, kind: str, threshold: Decimal, spend: Decimal,
                    limit: Decimal, resets_at: str | None, request_id: str, crossed_at: datetime) -> "BudgetAlert":
        return cls._create(cls.Raised, id=alert_stream_id(alert_id), alert_id=alert_id, scope=scope, period=period,
                           kind=kind, threshold=threshold, spend=spend, limit=limit, resets_at=resets_at,
                           request_id=request_id, crossed_at=crossed_at)

    def __init__(self, alert_id: str, scope: str, period: str, kind: str, threshold: Decimal, spend: Decimal,
                 limit: Decimal, resets_at: str | None, request_id: str, crossed_at: datetime) -> None:
        self.alert_id = alert_id
        self.scope, self.period, self.kind = scope, period, kind
        self.threshold, self.spend, self.limit = threshold, spend, limit
        self.resets_at = resets_at
        self.request_id = request_id
        self.crossed_at = crossed_at
        self.deliveries: dict[str, WebhookDelivery] = {}  # by webhook label

    def delivery(self, webhook: str) -> WebhookDelivery:
        return self.deliveries.setdefault(webhook, WebhookDelivery())

    def is_settled(self, webhook: str) -> bool:
        return webhook in self.deliveries and self.deliveries[webhook].settled is not None

    def delivered(self, webhook: str, status: int) -> None:
        self._require_unsettled(webhook)
        self.trigger_event(self.Delivered, webhook=webhook, attempt=self.delivery(webhook).attempts + 1, status=status)

    def failed(self, webhook: str, *, status: int | None, error: str, retry_at: datetime | None) -> None:
        self._require_unsettled(webhook)
        self.trigger_event(self.DeliveryFailed, webhook=webhook, attempt=self.delivery(webhook).attempts + 1,
                           status=status, error=error, retry_at=retry_at)

    def give_up(self, webhook: str, reason: str) -> None:
        self._require_unsettled(webhook)
        self.trigger_event(self.GaveUp, webhook=webhook, attempts=self.delivery(webhook).attempts, reason=reason)

    def _require_unsettled(self, webhook: str) -> None:
        if self.is_settled(webhook):
            raise ValueError(f"the alert {self.alert_id} is already {self.deliveries[webhook].settled} to {webhook}")
