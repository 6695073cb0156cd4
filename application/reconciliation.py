"""Reconciling the ledger with Lago: every call billed through Lago whose Lago timestamp is in
[from, to), against the events Lago holds for the same subscriptions, code and times.

Each call, and each Lago event no call accounts for, falls in one row of the report:

- `equal`: Lago holds the call's event with the same amount;
- `differs`: Lago holds it with another `precise_total_amount_cents` (amounts are compared at
  Lago's scale, 15 decimals of a cent, where its decimal(40, 15) column rounds);
- `missing`: the ledger says the call was delivered and Lago does not hold it;
- `unknown`: Lago holds an event of this code whose transaction_id is no call of the ledger;
- `parked`: Lago refused the call and it waits for `moneta lago retry-parked` (explained);
- `pending`: not delivered yet, first attempt to come or retrying (explained).

The unexplained differences are the missing, unknown and differing rows: finance signs off on zero.
`repair` sends the missing calls again (Requeued, then sent at once, each outcome recorded).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Protocol, Sequence

from moneta.application.lago_delivery import LagoDelivery
from moneta.application.lago_events import LagoEvents
from moneta.application.ports import AggregateReader
from moneta.domain.lago_usage import DELIVERED, PARKED, RETRYING, BilledCall, usage_stream_id

EQUAL, DIFFERS, MISSING, UNKNOWN, PARKED_ROW, PENDING_ROW = "equal", "differs", "missing", "unknown", "parked", \
    "pending"
STATUSES = (EQUAL, MISSING, UNKNOWN, DIFFERS, PARKED_ROW, PENDING_ROW)
UNEXPLAINED = (MISSING, UNKNOWN, DIFFERS)
LABELS = {EQUAL: "delivered and equal", MISSING: "missing in Lago", UNKNOWN: "unknown to the ledger",
          DIFFERS: "amount differs", PARKED_ROW: "parked", PENDING_ROW: "pending"}
_LAGO_SCALE = Decimal("1E-15")


class BilledCalls(Protocol):
    def between(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The billed calls with a Lago timestamp in [start, end), each {"call": BilledCall, ...}."""
        ...

    def subscriptions(self) -> list[str]: ...

    def calls(self, request_ids: Sequence[str]) -> list[BilledCall]: ...


@dataclass(frozen=True)
class Row:
    status: str
    transaction_id: str
    subscription: str
    customer: str | None  # None for an event unknown to the ledger
    timestamp: datetime | None
    ledger_cents: str | None
    lago_cents: str | None
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "timestamp": None if self.timestamp is None else self.timestamp.isoformat()}


@dataclass
class Report:
    start: datetime
    end: datetime
    rows: list[Row] = field(default_factory=list)
    lago_events: int = 0

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for row in self.rows:
            counts[row.status] += 1
        return counts

    @property
    def unexplained(self) -> int:
        return sum(count for status, count in self.counts.items() if status in UNEXPLAINED)

    def of(self, status: str) -> list[Row]:
        return [row for row in self.rows if row.status == status]

    def as_json(self, with_equal: bool = False) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "counts": self.counts,
                "unexplained": self.unexplained, "ledger_calls": len(self.rows) - self.counts[UNKNOWN],
                "lago_events": self.lago_events,
                "rows": [row.as_json() for row in self.rows if with_equal or row.status != EQUAL]}


class Reconciliation:
    def __init__(self, calls: BilledCalls, reader: AggregateReader, lago: LagoEvents, code: str) -> None:
        self.calls = calls
        self.reader = reader
        self.lago = lago
        self.code = code

    async def report(self, start: datetime, end: datetime) -> Report:
        if end <= start:
            raise ValueError("the range is empty: `to` must come after `from`")
        ledger = self.calls.between(start, end)
        subscriptions = sorted(set(self.calls.subscriptions()) | {row["call"].subscription for row in ledger})
        held: dict[tuple[str, str], dict[str, Any]] = {}
        for subscription in subscriptions:
            for event in await self.lago.listed(subscription, self.code, start, end):
                at = _parse_time(event.get("timestamp"))
                if at is not None and start <= at < end:  # Lago's timestamp_to is inclusive
                    held[(event.get("external_subscription_id") or subscription, event["transaction_id"])] = event
        report = Report(start, end, lago_events=len(held))
        for row in ledger:
            call: BilledCall = row["call"]
            report.rows.append(self._compare(call, held.pop((call.subscription, call.request_id), None)))
        report.rows.extend(Row(UNKNOWN, event["transaction_id"], subscription, None, _parse_time(event["timestamp"]),
                               None, event.get("precise_total_amount_cents"), "not a call of the ledger")
                           for (subscription, _), event in sorted(held.items()))
        return report

    async def repair(self, report: Report, delivery: LagoDelivery) -> list[str]:
        """Sends the calls missing in Lago again, now; returns their request ids."""
        missing = self.calls.calls([row.transaction_id for row in report.of(MISSING)])
        requeued = delivery.requeue(missing, actor="reconcile", reason="missing in Lago", when=(DELIVERED,))
        await delivery.deliver_now(requeued)
        return requeued

    def _compare(self, call: BilledCall, event: dict[str, Any] | None) -> Row:
        row = Row(EQUAL, call.request_id, call.subscription, call.customer, call.completed_at, call.cents, None)
        if event is not None:
            lago_cents = event.get("precise_total_amount_cents")
            same = _at_lago_scale(lago_cents) == _at_lago_scale(call.cents)
            return replace(row, status=EQUAL if same else DIFFERS, lago_cents=lago_cents,
                           detail="" if same else "Lago holds another amount")
        usage = self.reader.get(usage_stream_id(call.request_id))
        if usage is not None and usage.status == DELIVERED:
            return replace(row, status=MISSING, detail=f"delivered (attempt {usage.attempts}), not held by Lago")
        if usage is not None and usage.status == PARKED:
            return replace(row, status=PARKED_ROW, detail=usage.reason)
        if usage is not None and usage.status == RETRYING:
            retry = f"retrying at {usage.retry_at.isoformat()} after attempt {usage.attempts}"
            return replace(row, status=PENDING_ROW, detail=f"{retry}: {usage.reason}")
        return replace(row, status=PENDING_ROW, detail="not sent yet")


def moment(text: str) -> datetime:
    """An ISO 8601 time (`2026-05-20`, `2026-05-20T14:03:00Z`, ...); one without a zone is UTC."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _at_lago_scale(cents: Any) -> Decimal | None:
    if cents is None:
        return None
    try:
        return Decimal(str(cents)).quantize(_LAGO_SCALE, ROUND_HALF_UP)
    except InvalidOperation:
        return None


def _parse_time(value: Any) -> datetime | None:
    try:
        return moment(value) if isinstance(value, str) else None
    except ValueError:
        return None
