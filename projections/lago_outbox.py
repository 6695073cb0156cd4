"""The Lago outbox view: every call billed through Lago, once it is settled, with what its usage
event is made of.

An Admitted event whose decision names a Lago subscription opens a pending row; the call's
Completed (or Interrupted) event files it in `lago_outbox`, and in the delivery schedule
(`lago_deliveries`, see there) as due now unless the schedule has it already: a rebuild files the
same calls again and leaves how far their delivery went alone. Failed, Abandoned and cache hits
bill nothing: they only close the pending row.

A page costs at most five statements: the pending rows its outcomes end, one insert of outbox
rows, one of schedule rows, one insert and one delete of pending rows.
"""
from __future__ import annotations

import json
from typing import Any

from moneta.domain.lago_usage import BilledCall, billing_target
from moneta.domain.request_record import RequestRecord
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, as_datetime, as_decimal

TABLES = ("lago_outbox", "lago_pending")  # not lago_deliveries: a rebuild must not forget what was sent
DDL = (
    """CREATE TABLE IF NOT EXISTS lago_pending (
        request_id TEXT PRIMARY KEY,
        customer TEXT NOT NULL,
        subscription TEXT NOT NULL,
        model_group TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS lago_outbox (
        request_id TEXT PRIMARY KEY,
        customer TEXT NOT NULL,
        subscription TEXT NOT NULL,
        model_group TEXT NOT NULL,
        provider TEXT NOT NULL,
        provider_model TEXT NOT NULL,
        completed_at {timestamp} NOT NULL,
        cost {money} NOT NULL,
        askii {money},
        usage {json} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS lago_outbox_completed_at ON lago_outbox (completed_at)",
)
_BILLED = (RequestRecord.Completed,)  # Interrupted is a Completed
_ENDINGS = (*_BILLED, RequestRecord.Failed, RequestRecord.Abandoned, RequestRecord.CacheHit)
EVENT_TYPES = (RequestRecord.Admitted, RequestRecord.Interrupted, *_ENDINGS)
OUTBOX_COLUMNS = ("request_id", "customer", "subscription", "model_group", "provider", "provider_model",
                  "completed_at", "cost", "askii", "usage")
_FILE = (f"INSERT INTO lago_outbox ({', '.join(OUTBOX_COLUMNS)}) VALUES ({', '.join('?' for _ in OUTBOX_COLUMNS)})"
         " ON CONFLICT (request_id) DO NOTHING")
_SCHEDULE = ("INSERT INTO lago_deliveries (request_id, attempts, next_attempt_at) VALUES (?, 0, ?)"
             " ON CONFLICT (request_id) DO NOTHING")


def apply_page(cur: ViewCursor, page: Page) -> None:
    opened: dict[str, tuple[str, str, str]] = {}
    for event in page.events:
        if isinstance(event, RequestRecord.Admitted):
            target = billing_target(event.decision)
            if target is not None:
                opened[page.stream_id(event)] = (*target, event.model_group)
    ended = [event for event in page.events if isinstance(event, _ENDINGS)]
    if not opened and not ended:
        return
    pending = _pending(cur, [page.stream_id(e) for e in ended if page.stream_id(e) not in opened])
    pending.update(opened)
    closing = [(page.stream_id(e), e) for e in ended if page.stream_id(e) in pending]
    billed = [BilledCall.of(request_id, *pending[request_id], event) for request_id, event in closing
              if isinstance(event, _BILLED)]
    if billed:
        cur.executemany(_FILE, [_row(call) for call in billed])
        cur.executemany(_SCHEDULE, [(call.request_id, call.completed_at) for call in billed])
    closed = {request_id for request_id, _ in closing}
    still_open = [(request_id, *target) for request_id, target in opened.items() if request_id not in closed]
    if still_open:
        cur.executemany("INSERT INTO lago_pending (request_id, customer, subscription, model_group)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING", still_open)
    gone = sorted(closed - opened.keys())  # pending since an earlier page
    if gone:
        cur.execute(f"DELETE FROM lago_pending WHERE {cur.any_of('request_id')}", (gone,))


def _pending(cur: ViewCursor, request_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    if not request_ids:
        return {}
    rows = cur.execute("SELECT request_id, customer, subscription, model_group FROM lago_pending"
                       f" WHERE {cur.any_of('request_id')}", (sorted(request_ids),)).all()
    return {row["request_id"]: (row["customer"], row["subscription"], row["model_group"]) for row in rows}


def _row(call: BilledCall) -> list[Any]:
    return [call.request_id, call.customer, call.subscription, call.model_group, call.provider, call.provider_model,
            call.completed_at, call.cost, call.askii, json.dumps(call.usage)]


def billed_call(row: dict[str, Any]) -> BilledCall:
    """An outbox row as the domain's BilledCall."""
    usage = row["usage"]
    return BilledCall(request_id=row["request_id"], customer=row["customer"], subscription=row["subscription"],
                      model_group=row["model_group"], provider=row["provider"], provider_model=row["provider_model"],
                      completed_at=as_datetime(row["completed_at"]), cost=as_decimal(row["cost"]),
                      askii=None if row["askii"] is None else as_decimal(row["askii"]),
                      usage=json.loads(usage) if isinstance(usage, str) else dict(usage))
