"""The billing view: who the gateway has seen, what Lago says of each customer, and how the sync
rounds went.

- `billing_seen` (kind, id, first_seen_at): each end user (`customer`), team, user and key (its hash)
  that an Admitted or Denied call named, so the sync knows whom to read from Lago.
- `lago_customers`: one row per customer stream (subscription, features, wallet as JSON), with
  `synced_at` (when a sync last read it from Lago), `refresh_wanted_at` (when a webhook asked for
  a new read) and a `revision` per page that changed what the entitlement check reads, so that
  the workers' in-memory directories read only what changed.
- `lago_sync_status`: one row, the last good full round (`full_started_at`, ...), the last success
  of any round and the last failure with its reason.

A page costs at most seven statements: one insert of the ids seen, the customer rows it touches,
the highest revision, one upsert of those rows, one update of the subscribers of the plans whose
entitlements changed (plan.updated webhooks), the status row and its upsert.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Iterable

from moneta.domain.billing import (
    CUSTOMER_ID_FROM, PLAN_REFRESH_TYPES, REFRESHING_TYPES, SCOPE_ALL, SCOPE_DUE, SYNC, LagoCustomer, LagoSyncLog,
    LagoWebhook, customer_id_of,
)
from moneta.domain.request_record import RequestRecord
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, ViewStore, as_datetime, iso_utc, upsert_sql

STATUS_NAME = "lago"
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
TABLES = ("billing_seen", "lago_customers", "lago_sync_status")
DDL = (
    """CREATE TABLE IF NOT EXISTS billing_seen (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        first_seen_at {timestamp} NOT NULL,
        PRIMARY KEY (kind, id)
    )""",
    """CREATE TABLE IF NOT EXISTS lago_customers (
        customer_id TEXT PRIMARY KEY,
        stream_id TEXT NOT NULL,
        subscription {json},
        features {json} NOT NULL,
        wallet {json},
        plan_code TEXT,
        wallet_id TEXT,
        first_synced_at {timestamp} NOT NULL,
        changed_at {timestamp} NOT NULL,
        synced_at {timestamp} NOT NULL,
        refresh_wanted_at {timestamp},
        version BIGINT NOT NULL,
        revision BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS lago_customers_stream ON lago_customers (stream_id)",
    "CREATE INDEX IF NOT EXISTS lago_customers_revision ON lago_customers (revision)",
    "CREATE INDEX IF NOT EXISTS lago_customers_plan ON lago_customers (plan_code)",
    """CREATE TABLE IF NOT EXISTS lago_sync_status (
        name TEXT PRIMARY KEY,
        full_started_at {timestamp},
        full_ended_at {timestamp},
        full_customers BIGINT,
        full_changed BIGINT,
        full_skipped {json},
        last_success_at {timestamp},
        last_success_scope TEXT,
        last_failure_at {timestamp},
        last_failure_scope TEXT,
        last_failure_reason TEXT
    )""",
)
_CUSTOMER_EVENTS = (LagoCustomer.Tracked, LagoCustomer.SubscriptionChanged, LagoCustomer.EntitlementsChanged,
                    LagoCustomer.WalletChanged, LagoCustomer.WalletTransactionReported)
_SYNC_EVENTS = (LagoSyncLog.SyncSucceeded, LagoSyncLog.SyncFailed)
_CALLS = (RequestRecord.Admitted, RequestRecord.Denied)
EVENT_TYPES = (*_CUSTOMER_EVENTS, *_SYNC_EVENTS, LagoWebhook.Received, *_CALLS)
_CUSTOMER_COLUMNS = ("customer_id", "stream_id", "subscription", "features", "wallet", "plan_code", "wallet_id",
                     "first_synced_at", "changed_at", "synced_at", "refresh_wanted_at", "version", "revision")
_UPSERT_CUSTOMER = upsert_sql("lago_customers", _CUSTOMER_COLUMNS, key=("customer_id",))
_STATUS_COLUMNS = ("name", "full_started_at", "full_ended_at", "full_customers", "full_changed", "full_skipped",
                   "last_success_at", "last_success_scope", "last_failure_at", "last_failure_scope",
                   "last_failure_reason")
_UPSERT_STATUS = upsert_sql("lago_sync_status", _STATUS_COLUMNS, key=("name",))
_SEEN = "INSERT INTO billing_seen (kind, id, first_seen_at) VALUES (?, ?, ?) ON CONFLICT (kind, id) DO NOTHING"
_PLAN_REFRESH = ("UPDATE lago_customers SET refresh_wanted_at = ? WHERE plan_code = ?"
                 " AND (refresh_wanted_at IS NULL OR refresh_wanted_at < ?)")


def apply_page(cur: ViewCursor, page: Page) -> None:
    events = [event for event in page.events if isinstance(event, EVENT_TYPES)]
    if not events:
        return
    seen = _seen(e for e in events if isinstance(e, _CALLS))
    if seen:
        cur.executemany(_SEEN, seen)
    _customers(cur, page, events)
    plans = [(e.at, e.object_id, e.at) for e in events
             if isinstance(e, LagoWebhook.Received) and e.webhook_type in PLAN_REFRESH_TYPES and e.object_id]
    if plans:
        cur.executemany(_PLAN_REFRESH, plans)
    rounds = [e for e in events if isinstance(e, _SYNC_EVENTS)]
    if rounds:
        _status(cur, rounds)


def _seen(calls: Iterable[Any]) -> list[tuple[str, str, datetime]]:
    """Each (kind, id) once per page, with the first call's time (the insert keeps an earlier one)."""
    found: dict[tuple[str, str], datetime] = {}
    for call in calls:
        for kind in CUSTOMER_ID_FROM:
            name = customer_id_of(kind, end_user=call.end_user, principal=call.principal, key_hash=call.key_hash)
            if name:
                found.setdefault((kind, name), call.timestamp)
    return [(kind, name, at) for (kind, name), at in found.items()]


# -- customers ----------------------------------------------------------------------------------------

def _customers(cur: ViewCursor, page: Page, events: list[Any]) -> None:
    changes = [e for e in events if isinstance(e, _CUSTOMER_EVENTS)]
    refreshed = {customer: e.started_at for e in events if isinstance(e, LagoSyncLog.SyncSucceeded)
                 and e.scope == SCOPE_DUE for customer in e.refreshed}
    wanted = {e.customer_id: e.at for e in events if isinstance(e, LagoWebhook.Received)
              and e.webhook_type in REFRESHING_TYPES and e.customer_id}
    if not changes and not refreshed and not wanted:
        return
    rows = _read(cur, sorted({page.stream_id(e) for e in changes}), sorted({*refreshed, *wanted}))
    by_stream = {row["stream_id"]: row for row in rows.values()}
    touched: set[str] = set()
    for event in changes:
        row = _fold(by_stream.get(page.stream_id(event)), page.stream_id(event), event)
        by_stream[row["stream_id"]] = rows[row["customer_id"]] = row
        touched.add(row["customer_id"])
    for customer, at in refreshed.items():
        if customer in rows and at > rows[customer]["synced_at"]:
            rows[customer]["synced_at"] = at
            touched.add(customer)
    revision = _next_revision(cur) if touched else 0
    for customer, at in wanted.items():
        row = rows.get(customer)
        if row is not None and (row["refresh_wanted_at"] is None or at > row["refresh_wanted_at"]):
            row["refresh_wanted_at"] = at
    for customer in touched:
        rows[customer]["revision"] = revision
    stored = [row for row in rows.values() if row["customer_id"] in touched or row["customer_id"] in wanted]
    if stored:
        cur.executemany(_UPSERT_CUSTOMER, [[_stored(row, column) for column in _CUSTOMER_COLUMNS] for row in stored])


def _fold(row: dict[str, Any] | None, stream_id: str, event: Any) -> dict[str, Any]:
    if row is None:  # a Tracked event: the stream's first
        row = {"customer_id": event.customer_id, "stream_id": stream_id, "subscription": None, "features": {},
               "wallet": None, "first_synced_at": event.at, "changed_at": event.at, "synced_at": event.at,
               "refresh_wanted_at": None}
    if isinstance(event, LagoCustomer.SubscriptionChanged):
        row["subscription"] = event.subscription
    elif isinstance(event, LagoCustomer.EntitlementsChanged):
        row["features"] = event.features
    elif isinstance(event, LagoCustomer.WalletChanged):
        row["wallet"] = event.wallet
    row["changed_at"] = max(row["changed_at"], event.at)
    if event.source == SYNC:
        row["synced_at"] = max(row["synced_at"], event.at)
    row["plan_code"] = (row["subscription"] or {}).get("plan_code")
    row["wallet_id"] = (row["wallet"] or {}).get("lago_id")
    row["version"] = event.originator_version
    return row


def _read(cur: ViewCursor, stream_ids: list[str], customer_ids: list[str]) -> dict[str, dict[str, Any]]:
    lists = [(column, ids) for column, ids in (("stream_id", stream_ids), ("customer_id", customer_ids)) if ids]
    where = " OR ".join(cur.any_of(column) for column, _ in lists)
    found = cur.execute(f"SELECT * FROM lago_customers WHERE {where}", [ids for _, ids in lists]).all()
    return {row["customer_id"]: _loaded(row) for row in found}


def _loaded(row: dict[str, Any]) -> dict[str, Any]:
    for column in ("subscription", "features", "wallet"):
        row[column] = _json(row[column])
    for column in ("first_synced_at", "changed_at", "synced_at", "refresh_wanted_at"):
        row[column] = as_datetime(row[column])
    return row


def _next_revision(cur: ViewCursor) -> int:
    return (cur.execute("SELECT COALESCE(MAX(revision), 0) AS r FROM lago_customers").one() or {"r": 0})["r"] + 1


def _stored(row: dict[str, Any], column: str) -> Any:
    value = row.get(column)
    if column in ("subscription", "features", "wallet"):
        return None if value is None else json.dumps(value, default=_plain)
    return value


def _plain(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json(value: Any) -> Any:
    """A JSON column as stored: text on SQLite, decoded on Postgres."""
    return json.loads(value) if isinstance(value, str) else value


# -- the sync rounds ------------------------------------------------------------------------------------

def _status(cur: ViewCursor, rounds: list[Any]) -> None:
    row = cur.execute("SELECT * FROM lago_sync_status WHERE name = ?", (STATUS_NAME,)).one() or {"name": STATUS_NAME}
    row = {column: row.get(column) for column in _STATUS_COLUMNS}
    for column in ("full_started_at", "full_ended_at", "last_success_at", "last_failure_at"):
        row[column] = as_datetime(row[column])
    row["full_skipped"] = _json(row["full_skipped"])
    for event in rounds:
        if isinstance(event, LagoSyncLog.SyncFailed):
            if row["last_failure_at"] is None or event.at >= row["last_failure_at"]:
                row.update(last_failure_at=event.at, last_failure_scope=event.scope, last_failure_reason=event.reason)
            continue
        if row["last_success_at"] is None or event.at >= row["last_success_at"]:
            row.update(last_success_at=event.at, last_success_scope=event.scope)
        if event.scope == SCOPE_ALL and (row["full_started_at"] is None or event.started_at >= row["full_started_at"]):
            row.update(full_started_at=event.started_at, full_ended_at=event.at, full_customers=event.customers,
                       full_changed=event.changed, full_skipped=event.skipped)
    row["full_skipped"] = None if row["full_skipped"] is None else json.dumps(row["full_skipped"])
    cur.execute(_UPSERT_STATUS, [row[column] for column in _STATUS_COLUMNS])


# -- reading the view -----------------------------------------------------------------------------------

_DUE = ("SELECT s.id AS customer_id FROM billing_seen s WHERE s.kind = ? AND NOT EXISTS"
        " (SELECT 1 FROM lago_customers c WHERE c.customer_id = s.id)"
        " UNION SELECT customer_id FROM lago_customers WHERE refresh_wanted_at > synced_at AND refresh_wanted_at > ?"
        " LIMIT ?")


class BillingViewReader:
    """What the sync and the workers read of the billing view."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store

    def seen(self, kind: str) -> list[str]:
        """Every id of `kind` the gateway has seen in a call."""
        with self.store.reading() as cur:
            rows = cur.execute("SELECT id FROM billing_seen WHERE kind = ? ORDER BY id", (kind,)).all()
        return [row["id"] for row in rows]

    def due(self, kind: str, limit: int = 500) -> list[str]:
        """Ids of `kind` seen but never synced, and customers a webhook asked to read again since the
        last read (their own, or the last good full round's)."""
        with self.store.reading() as cur:
            status = cur.execute("SELECT full_started_at FROM lago_sync_status WHERE name = ?", (STATUS_NAME,)).one()
            full = as_datetime((status or {}).get("full_started_at")) or NEVER
            rows = cur.execute(_DUE, (kind, full, limit)).all()
        return sorted(row["customer_id"] for row in rows)

    def customers_changed_since(self, revision: int) -> list[dict[str, Any]]:
        """Rows changed after `revision`, oldest change first: customer_id, subscription, features,
        wallet (decoded JSON: amounts and times as text), synced_at, revision."""
        with self.store.reading() as cur:
            rows = cur.execute("SELECT customer_id, subscription, features, wallet, synced_at, revision"
                               " FROM lago_customers WHERE revision > ? ORDER BY revision", (revision,)).all()
        for row in rows:
            row.update(subscription=_json(row["subscription"]), features=_json(row["features"]),
                       wallet=_json(row["wallet"]), synced_at=as_datetime(row["synced_at"]))
        return rows

    def sync_status(self) -> dict[str, Any] | None:
        """The status row (times as datetimes, `full_skipped` a list), None before any round ended."""
        with self.store.reading() as cur:
            row = cur.execute("SELECT * FROM lago_sync_status WHERE name = ?", (STATUS_NAME,)).one()
        if row is None:
            return None
        for column in ("full_started_at", "full_ended_at", "last_success_at", "last_failure_at"):
            row[column] = as_datetime(row[column])
        row["full_skipped"] = _json(row["full_skipped"]) or []
        return row
