"""The alert outbox's delivery schedule: per alert and webhook, how far delivery went and when to
try next. The ledger's BudgetAlert streams are the truth (the deliverer reads one before sending);
this table only saves it reading every alert's stream on every round, and lets one deliverer claim
an alert for the time of an attempt, so that two read-side processes do not both send it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from moneta.projections.view_store import ViewStore, as_datetime, as_decimal, upsert_sql

DDL = (
    """CREATE TABLE IF NOT EXISTS budget_alert_deliveries (
        alert_id TEXT NOT NULL,
        webhook TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at {timestamp},
        settled TEXT,
        last_status INTEGER,
        last_error TEXT,
        PRIMARY KEY (alert_id, webhook)
    )""",
)
_COLUMNS = ("alert_id", "webhook", "attempts", "next_attempt_at", "settled", "last_status", "last_error")
_RECORD = upsert_sql("budget_alert_deliveries", _COLUMNS, key=("alert_id", "webhook"))
_CLAIM = ("INSERT INTO budget_alert_deliveries (alert_id, webhook, attempts, next_attempt_at) VALUES (?, ?, 0, ?)"
          " ON CONFLICT (alert_id, webhook) DO UPDATE SET next_attempt_at = excluded.next_attempt_at"
          " WHERE budget_alert_deliveries.settled IS NULL AND budget_alert_deliveries.next_attempt_at <= ?"
          " RETURNING alert_id")
_DUE = ("SELECT a.* FROM budget_alerts a WHERE NOT EXISTS (SELECT 1 FROM budget_alert_deliveries d"
        " WHERE d.alert_id = a.alert_id AND d.webhook = ? AND (d.settled IS NOT NULL OR d.next_attempt_at > ?))"
        " ORDER BY a.crossed_at LIMIT ?")


class AlertDeliveries:
    """The outbox (`budget_alerts`, filled by the budget view) with its delivery schedule."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store

    def due(self, webhook: str, now: datetime, limit: int) -> list[dict[str, Any]]:
        """The alerts not settled for `webhook` whose next attempt is due, oldest first."""
        with self.store.reading() as cur:
            rows = cur.execute(_DUE, (webhook, now, limit)).all()
        return [{**row, **{k: as_decimal(row[k]) for k in ("threshold", "spend", "budget_limit")},
                 "crossed_at": as_datetime(row["crossed_at"])} for row in rows]

    def claim(self, alert_id: str, webhook: str, now: datetime, until: datetime) -> bool:
        """Holds the alert's next attempt to `webhook` for this deliverer until `until`; False when
        it is settled or another deliverer holds it."""
        with self.store.transaction() as cur:
            return cur.execute(_CLAIM, (alert_id, webhook, until, now)).one() is not None

    def record(self, alert_id: str, webhook: str, *, attempts: int, next_attempt_at: datetime | None,
               settled: str | None, last_status: int | None = None, last_error: str | None = None) -> None:
        with self.store.transaction() as cur:
            cur.execute(_RECORD, (alert_id, webhook, attempts, next_attempt_at, settled, last_status, last_error))
