"""The budget view: what each budget has spent, per period and over its lifetime, from the ledger.

An Admitted event names the budgets a call reserved on (its `decision.budget.scopes`, each with its
period); the call's outcome adds its cost to each of them, in the period it was admitted in. A
spend that crosses a budget's soft limit, or its limit, files an alert in `budget_alerts` once per
budget, period and kind: the alert outbox, which the read side delivers.

A page costs at most six statements: the pending calls its outcomes end, the spend rows they
touch, one upsert of those rows, one insert and one delete of pending calls, and one insert of
the alerts crossed (one, the first, when no call in it has a budget).
"""
from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any, Callable, Sequence

from moneta.domain.budgets import BudgetLine, to_nanos
from moneta.domain.request_record import RequestRecord
from moneta.projections import tracking
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, ViewStore, as_decimal, upsert_sql

LIFETIME = "lifetime"
TABLES = ("budget_spend", "budget_pending", "budget_alerts")
DDL = (
    """CREATE TABLE IF NOT EXISTS budget_spend (
        scope TEXT NOT NULL,
        period TEXT NOT NULL,
        spend {money} NOT NULL,
        calls BIGINT NOT NULL,
        PRIMARY KEY (scope, period)
    )""",
    """CREATE TABLE IF NOT EXISTS budget_pending (
        request_id TEXT PRIMARY KEY,
        scopes {json} NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS budget_alerts (
        alert_id TEXT PRIMARY KEY,
        scope TEXT NOT NULL,
        period TEXT NOT NULL,
        kind TEXT NOT NULL,
        threshold {money} NOT NULL,
        spend {money} NOT NULL,
        budget_limit {money} NOT NULL,
        resets_at TEXT,
        request_id TEXT NOT NULL,
        crossed_at {timestamp} NOT NULL
    )""",
)
# Interrupted is a Completed; a cache hit ends a call at no cost
_ENDINGS = (RequestRecord.Completed, RequestRecord.CacheHit, RequestRecord.Failed, RequestRecord.Abandoned)
EVENT_TYPES = (RequestRecord.Admitted, RequestRecord.Interrupted, *_ENDINGS)
_UPSERT = upsert_sql("budget_spend", ("scope", "period", "spend", "calls"), key=("scope", "period"))
_ALERT_COLUMNS = ("alert_id", "scope", "period", "kind", "threshold", "spend", "budget_limit", "resets_at",
                  "request_id", "crossed_at")
_ALERT = (f"INSERT INTO budget_alerts ({', '.join(_ALERT_COLUMNS)}) VALUES ({', '.join('?' for _ in _ALERT_COLUMNS)})"
          " ON CONFLICT (alert_id) DO NOTHING")


def apply_page(cur: ViewCursor, page: Page) -> None:
    opened = {page.stream_id(e): e.decision["budget"]["scopes"] for e in page.of(RequestRecord.Admitted)
              if (e.decision or {}).get("budget")}
    ended = page.of(_ENDINGS)
    if not opened and not ended:
        return
    pending = _pending(cur, [page.stream_id(e) for e in ended if page.stream_id(e) not in opened])
    pending.update(opened)
    charges = [(page.stream_id(e), e) for e in ended if page.stream_id(e) in pending]
    if charges:
        _charge(cur, pending, charges)
    closed = {request_id for request_id, _ in charges}
    still_open = [(request_id, json.dumps(scopes)) for request_id, scopes in opened.items() if request_id not in closed]
    if still_open:
        cur.executemany("INSERT INTO budget_pending (request_id, scopes) VALUES (?, ?)", still_open)
    gone = sorted(request_id for request_id in closed if request_id not in opened)  # stored by an earlier page
    if gone:
        cur.execute(f"DELETE FROM budget_pending WHERE {cur.any_of('request_id')}", (gone,))


def _pending(cur: ViewCursor, request_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    if not request_ids:
        return {}
    rows = cur.execute(f"SELECT request_id, scopes FROM budget_pending WHERE {cur.any_of('request_id')}",
                       (sorted(request_ids),)).all()
    return {row["request_id"]: json.loads(row["scopes"]) if isinstance(row["scopes"], str) else row["scopes"]
            for row in rows}


def _charge(cur: ViewCursor, pending: dict[str, list[dict[str, Any]]], charges: list[tuple[str, Any]]) -> None:
    keys = {(scope["scope"], period) for request_id, _ in charges for scope in pending[request_id]
            for period in (scope["period"], LIFETIME)}
    rows = _spend_rows(cur, keys)
    alerts = []
    for request_id, event in charges:
        cost = event.cost if isinstance(event, (RequestRecord.Completed, RequestRecord.CacheHit)) else Decimal(0)
        for scope in pending[request_id]:
            for period in {scope["period"], LIFETIME}:
                row = rows[scope["scope"], period]
                before, row["spend"], row["calls"] = row["spend"], row["spend"] + cost, row["calls"] + 1
                if period == scope["period"]:
                    alerts += _crossed(scope, before, row["spend"], request_id, event.timestamp)
    cur.executemany(_UPSERT, [[r["scope"], r["period"], r["spend"], r["calls"]] for r in rows.values()])
    if alerts:
        cur.executemany(_ALERT, alerts)


def _spend_rows(cur: ViewCursor, keys: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    scopes = sorted({scope for scope, _ in keys})
    found = cur.execute(f"SELECT scope, period, spend, calls FROM budget_spend WHERE {cur.any_of('scope')}",
                        (scopes,)).all()
    rows = {(row["scope"], row["period"]): {**row, "spend": as_decimal(row["spend"])} for row in found
            if (row["scope"], row["period"]) in keys}
    for scope, period in keys - set(rows):
        rows[scope, period] = {"scope": scope, "period": period, "spend": Decimal(0), "calls": 0}
    return rows


def _crossed(scope: dict[str, Any], before: Decimal, after: Decimal, request_id: str, at: Any) -> list[list[Any]]:
    crossed = []
    for kind, threshold in (("soft_budget", scope.get("soft")), ("max_budget", scope["limit"])):
        if threshold is not None and before < Decimal(threshold) <= after:
            crossed.append([f"{scope['scope']}|{scope['period']}|{kind}", scope["scope"], scope["period"], kind,
                            Decimal(threshold), after, Decimal(scope["limit"]), scope.get("resets_at"), request_id,
                            at])
    return crossed


class BudgetViewReader:
    """The budget counters' source when they start empty: each budget's spend in its period, read
    once the view has caught up with the ledger as it stood when asked."""

    def __init__(self, store: ViewStore, head: Callable[[], int], projection: str, catch_up_s: float = 10.0) -> None:
        self.store = store
        self._head = head
        self._projection = projection
        self._catch_up_s = catch_up_s

    def spent(self, lines: Sequence[BudgetLine]) -> list[int]:
        self._wait_caught_up()
        with self.store.reading() as cur:
            rows = cur.execute(f"SELECT scope, period, spend FROM budget_spend WHERE {cur.any_of('scope')}",
                               (sorted({line.scope for line in lines}),)).all()
        spend = {(row["scope"], row["period"]): as_decimal(row["spend"]) for row in rows}
        return [to_nanos(spend.get((line.scope, line.period), Decimal(0)), up=True) for line in lines]

    def _wait_caught_up(self) -> None:
        head = self._head()
        deadline = time.monotonic() + self._catch_up_s
        while True:
            with self.store.reading() as cur:
                position = tracking.read(cur, self._projection)
            if position >= head:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the budget view is {head - position} events behind the ledger")
            time.sleep(0.02)

    def spend(self, scope: str, period: str) -> Decimal:
        """What the view holds for one budget and period (for the info routes)."""
        with self.store.reading() as cur:
            row = cur.execute("SELECT spend FROM budget_spend WHERE scope = ? AND period = ?", (scope, period)).one()
        return as_decimal(row["spend"]) if row else Decimal(0)
