"""Events a projection could not apply, set aside with the error so the read side keeps going.

An event is quarantined when applying it alone fails for a reason other than the view store
being unreachable (a connection error is retried, never quarantined). Later events of the same
stream are held back behind it, so that a stream is always applied in order: `moneta
projections retry` re-applies them, oldest first, once the cause is fixed.
"""
from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

import psycopg

from moneta.projections.view_store import ViewCursor

TABLES = ("projection_quarantine",)
DDL = (
    """CREATE TABLE IF NOT EXISTS projection_quarantine (
        name TEXT NOT NULL,
        notification_id BIGINT NOT NULL,
        originator_id TEXT NOT NULL,
        topic TEXT NOT NULL,
        error TEXT NOT NULL,
        quarantined_at {timestamp} NOT NULL,
        PRIMARY KEY (name, notification_id)
    )""",
)
HELD_BACK = "held back: an earlier event of this stream is quarantined"
_MAX_ERROR_CHARS = 2000


def is_transient(error: BaseException) -> bool:
    """The view store (or the ledger) could not be reached or was busy: try again, do not quarantine."""
    return isinstance(error, (psycopg.OperationalError, sqlite3.OperationalError, ConnectionError, TimeoutError))


def held_streams(cur: ViewCursor, name: str) -> set[str]:
    rows = cur.execute("SELECT DISTINCT originator_id FROM projection_quarantine WHERE name = ?", (name,)).all()
    return {row["originator_id"] for row in rows}


def add(cur: ViewCursor, name: str, notification: Any, error: str, now: datetime) -> None:
    cur.execute(
        "INSERT INTO projection_quarantine (name, notification_id, originator_id, topic, error, quarantined_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name, notification_id) DO UPDATE SET error = excluded.error",
        (name, notification.id, str(notification.originator_id), notification.topic, error[:_MAX_ERROR_CHARS], now),
    )


def listed(cur: ViewCursor, name: str) -> list[dict[str, Any]]:
    """The quarantined events, oldest first."""
    return cur.execute(
        "SELECT notification_id, originator_id, topic, error, quarantined_at FROM projection_quarantine"
        " WHERE name = ? ORDER BY notification_id", (name,)).all()


def count(cur: ViewCursor, name: str) -> int:
    return counts(cur).get(name, 0)


def counts(cur: ViewCursor) -> dict[str, int]:
    """Quarantined events per projection."""
    rows = cur.execute("SELECT name, COUNT(*) AS n FROM projection_quarantine GROUP BY name").all()
    return {row["name"]: int(row["n"]) for row in rows}


def release(cur: ViewCursor, name: str, notification_id: int) -> None:
    cur.execute("DELETE FROM projection_quarantine WHERE name = ? AND notification_id = ?", (name, notification_id))


def clear(cur: ViewCursor, name: str) -> None:
    cur.execute("DELETE FROM projection_quarantine WHERE name = ?", (name,))


def describe(error: BaseException) -> str:
    """The error as the operator reads it: its class and message, with NULs made visible."""
    return f"{type(error).__name__}: {error}".replace("\x00", "\\u0000")
