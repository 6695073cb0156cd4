"""The Lago outbox's delivery schedule: per billed call, how far delivery went and when to try next.

The ledger's LagoUsage streams are the truth (the deliverer reads a call's stream before sending
it); this table only saves reading every stream on every round, and lets one deliverer claim a
call for the time of an attempt (`claimed_by`, `next_attempt_at` = the claim's end), so that two
read-side processes do not both send it. The outbox view files each call here once, due at once;
a rebuild of the views leaves the table alone, so it sends nothing that was sent.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from moneta.domain.lago_usage import BilledCall
from moneta.projections.lago_outbox import billed_call
from moneta.projections.view_store import ViewStore, as_datetime, upsert_sql

DDL = (
    """CREATE TABLE IF NOT EXISTS lago_deliveries (
        request_id TEXT PRIMARY KEY,
        attempts INTEGER NOT NULL,
        next_attempt_at {timestamp},
        settled TEXT,
        claimed_by TEXT,
        last_status INTEGER,
        last_error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS lago_deliveries_due ON lago_deliveries (next_attempt_at) WHERE settled IS NULL",
)
_COLUMNS = ("request_id", "attempts", "next_attempt_at", "settled", "claimed_by", "last_status", "last_error")
_RECORD = upsert_sql("lago_deliveries", _COLUMNS, key=("request_id",))
_DUE = ("SELECT o.* FROM lago_deliveries d JOIN lago_outbox o ON o.request_id = d.request_id"
        " WHERE d.settled IS NULL AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at, d.request_id LIMIT ?")
_CALLS = ("SELECT o.*, d.attempts, d.settled, d.next_attempt_at, d.last_status, d.last_error"
          " FROM lago_outbox o LEFT JOIN lago_deliveries d ON d.request_id = o.request_id")


class LagoOutbox:
    """The outbox (`lago_outbox`, filed by its view) with its delivery schedule."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store

    def due(self, now: datetime, limit: int) -> list[BilledCall]:
        """The calls not settled whose next attempt is due, the longest waiting first."""
        with self.store.reading() as cur:
            return [billed_call(row) for row in cur.execute(_DUE, (now, limit)).all()]

    def calls(self, request_ids: Sequence[str]) -> list[BilledCall]:
        with self.store.reading() as cur:
            rows = cur.execute(f"SELECT * FROM lago_outbox WHERE {cur.any_of('request_id')}",
                               (sorted(request_ids),)).all()
        return [billed_call(row) for row in rows]

    def claim(self, request_ids: Sequence[str], holder: str, now: datetime, until: datetime) -> set[str]:
        """Holds the calls' next attempt for `holder` until `until`; returns those it got (not those
        settled, or held by another deliverer whose claim runs)."""
        with self.store.transaction() as cur:
            rows = cur.execute(
                "UPDATE lago_deliveries SET next_attempt_at = ?, claimed_by = ?"
                f" WHERE {cur.any_of('request_id')} AND settled IS NULL"
                " AND (next_attempt_at <= ? OR claimed_by = ?) RETURNING request_id",
                (until, holder, sorted(request_ids), now, holder)).all()
        return {row["request_id"] for row in rows}

    def record(self, states: Sequence[dict[str, Any]]) -> None:
        """Each call's delivery as its stream has it: `request_id`, `attempts`, `next_attempt_at`
        (None once settled), `settled` (delivered, parked or None), `last_status`, `last_error`.
        The claim ends."""
        if not states:
            return
        with self.store.transaction() as cur:
            cur.executemany(_RECORD, [[s["request_id"], s["attempts"], s["next_attempt_at"], s["settled"], None,
                                       s.get("last_status"), s.get("last_error")] for s in states])

    def hasten(self, now: datetime) -> int:
        """Makes every call waiting to retry due now (Lago answers again); returns how many."""
        with self.store.transaction() as cur:
            rows = cur.execute("UPDATE lago_deliveries SET next_attempt_at = ? WHERE settled IS NULL"
                               " AND claimed_by IS NULL AND next_attempt_at > ? RETURNING request_id",
                               (now, now)).all()
        return len(rows)

    def parked(self) -> list[dict[str, Any]]:
        """The parked calls with Lago's reason, oldest first."""
        with self.store.reading() as cur:
            rows = cur.execute(f"{_CALLS} WHERE d.settled = 'parked' ORDER BY o.completed_at, o.request_id").all()
        return [_with_delivery(row) for row in rows]

    def between(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The calls whose Lago timestamp is in [start, end), with their delivery as scheduled."""
        with self.store.reading() as cur:
            rows = cur.execute(f"{_CALLS} WHERE o.completed_at >= ? AND o.completed_at < ?"
                               " ORDER BY o.completed_at, o.request_id", (start, end)).all()
        return [_with_delivery(row) for row in rows]

    def subscriptions(self) -> list[str]:
        """Every Lago subscription the outbox has billed."""
        with self.store.reading() as cur:
            return [row["subscription"] for row in
                    cur.execute("SELECT DISTINCT subscription FROM lago_outbox ORDER BY subscription").all()]


def _with_delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {"call": billed_call(row), "attempts": row["attempts"] or 0, "settled": row["settled"],
            "next_attempt_at": as_datetime(row["next_attempt_at"]), "last_status": row["last_status"],
            "last_error": row["last_error"]}
