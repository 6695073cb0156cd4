"""How far each projection has read the notification log, kept in the views' own database."""
from __future__ import annotations

from moneta.projections.view_store import ViewCursor

DDL = ("CREATE TABLE IF NOT EXISTS projection_tracking (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",)


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


def advance(cur: ViewCursor, name: str, position: int) -> None:
    cur.execute("UPDATE projection_tracking SET position = ? WHERE name = ?", (position, name))
