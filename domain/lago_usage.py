"""Billing a call through Lago: the usage event it sends, and one stream per billed call that holds
every delivery outcome.

A call is billed through Lago when its Admitted decision names a Lago subscription
(`decision["entitlement"]["subscription"]`) and it ends Completed or Interrupted. Its usage event
is built from the ledger alone, so every retry sends the same bytes: `transaction_id` is the
request id and `timestamp` the completion time, to the millisecond (on Lago's high-volume
pipeline uniqueness is (transaction_id, timestamp): a retry with another timestamp bills twice).

The `LagoUsage` stream's id derives from the request id, so however often the call is taken from
the outbox it has one stream: Delivered (Lago took it, or already had it), DeliveryFailed (try
again at `retry_at`), Parked (Lago refused it for a reason retrying cannot change) and Requeued
(an operator or reconciliation asks for it to be sent again).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

_NAMESPACE = UUID("6c61676f-7573-4167-a56d-6f6e65746121")
PENDING, RETRYING, DELIVERED, PARKED = "pending", "retrying", "delivered", "parked"
SETTLED = (DELIVERED, PARKED)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def usage_stream_id(request_id: str) -> UUID:
    return uuid5(_NAMESPACE, str(request_id))


def billing_target(decision: dict[str, Any] | None) -> tuple[str, str] | None:
    """(customer, subscription) of a call billed through Lago, from its Admitted decision; None
    for a call that is not."""
    entitlement = (decision or {}).get("entitlement")
    if not isinstance(entitlement, dict) or not entitlement.get("subscription"):
        return None
    return str(entitlement.get("customer") or ""), str(entitlement["subscription"])


def lago_time(at: datetime) -> datetime:
    """The time Lago keeps for an event: to the millisecond (it shows `timestamp` as ISO 8601 with
    three decimals), in UTC."""
    at = at.astimezone(timezone.utc)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def unix_timestamp(at: datetime) -> str:
    """`1716206400.123`: Unix seconds with milliseconds, exact (no float on the way)."""
    delta = lago_time(at) - _EPOCH
    milliseconds = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return f"{milliseconds // 1000}.{milliseconds % 1000:03d}"


def amount_cents(usd: Decimal) -> str:
    """USD as cents in a decimal string, exact and never in exponent form (`0.0123` for $0.000123)."""
    return format(Decimal(usd).scaleb(2), "f")


@dataclass(frozen=True)
class BilledCall:
    """What the ledger says of a billed call: all its usage event is made of."""

    request_id: str
    customer: str
    subscription: str
    model_group: str
    provider: str
    provider_model: str
    completed_at: datetime  # the outcome event's time, as lago_time() keeps it
    cost: Decimal  # USD
    askii: Decimal | None  # None for calls settled before askii
    usage: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, request_id: str, customer: str, subscription: str, model_group: str, outcome: Any) -> "BilledCall":
        """From the Admitted event's billing target and model group and the call's Completed (or
        Interrupted) event."""
        return cls(request_id=request_id, customer=customer, subscription=subscription, model_group=model_group,
                   provider=outcome.provider, provider_model=outcome.provider_model,
                   completed_at=lago_time(outcome.timestamp), cost=outcome.cost, askii=outcome.askii,
                   usage=dict(outcome.usage))

    @property
    def cents(self) -> str:
        return amount_cents(self.cost)


def usage_event(call: BilledCall, code: str) -> dict[str, Any]:
    """The Lago usage event (`EventInputObject`) of a billed call: the same on every retry."""
    tokens = call.usage.get("prompt_tokens", 0) + call.usage.get("completion_tokens", 0)
    properties: dict[str, Any] = {"usd": format(call.cost, "f"), "model": call.model_group,
                                  "provider": call.provider, "provider_model": call.provider_model,
                                  "tokens": tokens, **call.usage}
    if call.askii is not None:
        properties["askii"] = format(call.askii, "f")
    return {"transaction_id": call.request_id, "external_subscription_id": call.subscription, "code": code,
            "timestamp": unix_timestamp(call.completed_at), "precise_total_amount_cents": call.cents,
            "properties": properties}


class LagoUsage(Aggregate):
    """How delivering one billed call's usage event to Lago went, attempt by attempt."""

    class Opened(Aggregate.Created):
        request_id: str
        subscription: str

    class Delivered(Aggregate.Event):
        attempt: int
        batch_size: int  # how many events the request that delivered it carried
        duplicate: bool  # Lago already had it (`transaction_id: value_already_exist`)

        def apply(self, aggregate: "LagoUsage") -> None:
            aggregate.attempts, aggregate.status, aggregate.retry_at = self.attempt, DELIVERED, None
            aggregate.last_status, aggregate.reason = None, ""

    class DeliveryFailed(Aggregate.Event):
        attempt: int
        status: int | None  # None: no answer (refused, timed out, dropped)
        reason: str
        retry_at: datetime

        def apply(self, aggregate: "LagoUsage") -> None:
            aggregate.attempts, aggregate.status, aggregate.retry_at = self.attempt, RETRYING, self.retry_at
            aggregate.last_status, aggregate.reason = self.status, self.reason

    class Parked(Aggregate.Event):
        attempt: int
        status: int | None
        reason: str  # Lago's, e.g. its `error_details`

        def apply(self, aggregate: "LagoUsage") -> None:
            aggregate.attempts, aggregate.status, aggregate.retry_at = self.attempt, PARKED, None
            aggregate.last_status, aggregate.reason = self.status, self.reason

    class Requeued(Aggregate.Event):
        actor: str  # who asked: `retry-parked`, `reconcile`, ...
        reason: str

        def apply(self, aggregate: "LagoUsage") -> None:
            aggregate.status, aggregate.retry_at = PENDING, None

    @classmethod
    def open(cls, request_id: str, subscription: str) -> "LagoUsage":
        return cls._create(cls.Opened, id=usage_stream_id(request_id), request_id=request_id,
                           subscription=subscription)

    def __init__(self, request_id: str, subscription: str) -> None:
        self.request_id = request_id
        self.subscription = subscription
        self.status = PENDING
        self.attempts = 0
        self.retry_at: datetime | None = None
        self.last_status: int | None = None
        self.reason = ""

    @property
    def is_settled(self) -> bool:
        return self.status in SETTLED

    def delivered(self, *, batch_size: int, duplicate: bool = False) -> None:
        self._require_unsettled()
        self.trigger_event(self.Delivered, attempt=self.attempts + 1, batch_size=batch_size, duplicate=duplicate)

    def failed(self, *, status: int | None, reason: str, retry_at: datetime) -> None:
        self._require_unsettled()
        self.trigger_event(self.DeliveryFailed, attempt=self.attempts + 1, status=status, reason=reason,
                           retry_at=retry_at)

    def park(self, *, status: int | None, reason: str) -> None:
        self._require_unsettled()
        self.trigger_event(self.Parked, attempt=self.attempts + 1, status=status, reason=reason)

    def requeue(self, *, actor: str, reason: str) -> None:
        """Sends a settled call again (a parked one once its cause is fixed, a delivered one Lago lost)."""
        if not self.is_settled:
            raise ValueError(f"the usage of request {self.request_id} is {self.status}: it is sent anyway")
        self.trigger_event(self.Requeued, actor=actor, reason=reason)

    def _require_unsettled(self) -> None:
        if self.is_settled:
            raise ValueError(f"the usage of request {self.request_id} is already {self.status}")
