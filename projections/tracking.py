"""How far each projection has read the notification log, and when its runner last proved alive,
kept in the views' own database."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from moneta.projections.view_store import ViewCursor, as_datetime

DDL = (
    "CREATE TABLE IF NOT EXISTS projection_tracking"
    " (name TEXT PRIMARY KEY, position BIGINT NOT NULL, heartbeat_at {timestamp})",
)


def upgrade(cur: ViewCursor) -> None:
    """Brings a tracking table created by an older version up to DDL."""
    if "heartbeat_at" not in cur.columns("projection_tracking"):
        cur.execute(cur.ddl("ALTER TABLE projection_tracking ADD COLUMN heartbeat_at {timestamp}"))


def ensure(cur: ViewCursor, name: str) -> None:
    cur.execute("INSERT INTO projection_tracking (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING", (name,))


def lock(cur: ViewCursor, name: str) -> int:
    """Reads the position and, on Postgres, locks it until the transaction ends.

    Concurrent runners queue here, and each re-reads the position its predecessor committed.
    (On SQLite the transaction already holds the database's write lock.)
    """
    row = cur.execute(f"SELECT position FROM projection_tracking WHERE name = ?{cur.for_update}", (name,)).one()
    if row is None:
        raise LookupError(f"projection {name!r} has no tracking row: run create_tables() (moneta migrate)")
    return int(row["position"])


def read(cur: ViewCursor, name: str) -> int:
    row = cur.execute("SELECT position FROM projection_tracking WHERE name = ?", (name,)).one()
    return 0 if row is None else int(row["position"])


def read_all(cur: ViewCursor) -> list[dict[str, Any]]:
    """Every projection's `name`, `position` and `heartbeat_at` (None if its runner never ran)."""
    rows = cur.execute("SELECT name, position, heartbeat_at FROM projection_tracking ORDER BY name").all()
    for row in rows:
        row["position"] = int(row["position"])
        row["heartbeat_at"] = as_datetime(row["heartbeat_at"])
    return rows


def advance(cur: ViewCursor, name: str, position: int, now: datetime) -> None:
    cur.execute("UPDATE projection_tracking SET position = ?, heartbeat_at = ? WHERE name = ?", (position, now, name))


def beat(cur: ViewCursor, name: str, now: datetime) -> None:
    cur.execute("UPDATE projection_tracking SET heartbeat_at = ? WHERE name = ?", (now, name))
