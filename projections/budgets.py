"""The budget view: what each budget has spent, per period and over its lifetime, from the ledger.

An Admitted event names the budgets a call reserved on (its `decision.budget.scopes`, each with its
period); the call's outcome adds its cost to each of them, in the period it was admitted in, except
the budgets of providers (`provider:<name>`): of those, only the one of the provider the outcome
names (a Completed or Interrupted) is charged, since the call reserved on every provider it might
have been served by. A
spend that crosses a budget's soft limit, or its limit, files an alert in `budget_alerts` once per
budget, period and kind: the alert outbox, which the read side delivers. A customer's Lago wallet
(`wallet:<customer>`) is charged over its lifetime and, in `budget_wallet_spend`, by the minute its
calls were admitted in (what the entitlement check subtracts from Lago's balance).

A page costs at most eight statements: the pending calls its outcomes end, the spend rows they
touch, one upsert of those rows, one insert and one delete of pending calls, one insert of the
alerts crossed, and a read and an upsert of the wallets' minutes (one, the first, when no call in
it has a budget).
"""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Callable, Sequence

from moneta.domain.budgets import PROVIDER, BudgetLine, provider_scope, to_nanos
from moneta.domain.request_record import RequestRecord
from moneta.projections import tracking
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, ViewStore, as_decimal, upsert_sql

LIFETIME = "lifetime"
TABLES = ("budget_spend", "budget_pending", "budget_alerts", "budget_wallet_spend")
DDL = (
    """CREATE TABLE IF NOT EXISTS budget_wallet_spend (
        scope TEXT NOT NULL,
        minute TEXT NOT NULL,
        spend {money} NOT NULL,
        PRIMARY KEY (scope, minute)
    )""",
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
_UPSERT_WALLET = upsert_sql("budget_wallet_spend", ("scope", "minute", "spend"), key=("scope", "minute"))
WALLET = "wallet:"
_MINUTE = "%Y-%m-%dT%H:%M"
_ALERT_COLUMNS = ("alert_id", "scope", "period", "kind", "threshold", "spend", "budget_limit", "resets_at",
                  "request_id", "crossed_at")
_ALERT = (f"INSERT INTO budget_alerts ({', '.join(_ALERT_COLUMNS)}) VALUES ({', '.join('?' for _ in _ALERT_COLUMNS)})"
          " ON CONFLICT (alert_id) DO NOTHING")


def apply_page(cur: ViewCursor, page: Page) -> None:
    opened = {page.stream_id(e): _with_minute(e.decision["budget"]["scopes"], e.timestamp)
              for e in page.of(RequestRecord.Admitted) if (e.decision or {}).get("budget")}
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
    charged = [(request_id, event, _charged(pending[request_id], event)) for request_id, event in charges]
    keys = {(scope["scope"], period) for _, _, scopes in charged for scope in scopes
            for period in (scope["period"], LIFETIME)}
    if not keys:  # only providers' budgets, none of which served the call
        return
    rows = _spend_rows(cur, keys)
    alerts = []
    for request_id, event, scopes in charged:
        cost = event.cost if isinstance(event, (RequestRecord.Completed, RequestRecord.CacheHit)) else Decimal(0)
        for scope in scopes:
            for period in {scope["period"], LIFETIME}:
                row = rows[scope["scope"], period]
                before, row["spend"], row["calls"] = row["spend"], row["spend"] + cost, row["calls"] + 1
                if period == scope["period"] and not scope["scope"].startswith(WALLET):  # Lago alerts on wallets
                    alerts += _crossed(scope, before, row["spend"], request_id, event.timestamp)
    cur.executemany(_UPSERT, [[r["scope"], r["period"], r["spend"], r["calls"]] for r in rows.values()])
    if alerts:
        cur.executemany(_ALERT, alerts)
    _charge_wallets(cur, charged)


def _with_minute(scopes: list[dict[str, Any]], admitted_at: datetime) -> list[dict[str, Any]]:
    """A wallet's scope remembers the minute its call was admitted in: the entitlement check asks what
    a wallet was charged for calls admitted before Lago computed its balance."""
    if not any(scope["scope"].startswith(WALLET) for scope in scopes):
        return scopes
    minute = admitted_at.astimezone(UTC).strftime(_MINUTE)
    return [{**scope, "minute": minute} if scope["scope"].startswith(WALLET) else scope for scope in scopes]


def _charge_wallets(cur: ViewCursor, charged: list[tuple[str, Any, list[dict[str, Any]]]]) -> None:
    """Two statements, when the page charges a wallet at all."""
    costs: dict[tuple[str, str], Decimal] = {}
    for _, event, scopes in charged:
        cost = event.cost if isinstance(event, (RequestRecord.Completed, RequestRecord.CacheHit)) else Decimal(0)
        for scope in scopes:
            if scope.get("minute"):
                key = (scope["scope"], scope["minute"])
                costs[key] = costs.get(key, Decimal(0)) + cost
    if not costs:
        return
    found = cur.execute(f"SELECT scope, minute, spend FROM budget_wallet_spend WHERE {cur.any_of('scope')}"
                        " AND minute >= ?", (sorted({scope for scope, _ in costs}), min(m for _, m in costs))).all()
    for row in found:
        if (row["scope"], row["minute"]) in costs:
            costs[row["scope"], row["minute"]] += as_decimal(row["spend"])
    cur.executemany(_UPSERT_WALLET, [[scope, minute, spend] for (scope, minute), spend in costs.items()])


def _charged(scopes: list[dict[str, Any]], event: Any) -> list[dict[str, Any]]:
    """The budgets an outcome charges: all the call reserved on, but of the providers' only the one
    that served it."""
    served = provider_scope(event.provider) if isinstance(event, RequestRecord.Completed) else None
    return [scope for scope in scopes if not scope["scope"].startswith(PROVIDER) or scope["scope"] == served]


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

    def spent_before(self, scope: str, moment: datetime) -> Decimal:
        """What the wallet scope was charged for calls admitted in the minutes before `moment`'s (a call
        admitted in its minute counts as after it), once the view has caught up."""
        self._wait_caught_up()
        with self.store.reading() as cur:
            row = cur.execute("SELECT SUM(spend) AS spend FROM budget_wallet_spend WHERE scope = ? AND minute < ?",
                              (scope, moment.astimezone(UTC).strftime(_MINUTE))).one()
        return as_decimal(row["spend"]) if row and row["spend"] is not None else Decimal(0)

    def spend(self, scope: str, period: str) -> Decimal:
        """What the view holds for one budget and period (for the info routes)."""
        with self.store.reading() as cur:
            row = cur.execute("SELECT spend FROM budget_spend WHERE scope = ? AND period = ?", (scope, period)).one()
        return as_decimal(row["spend"]) if row else Decimal(0)
