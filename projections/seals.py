"""The audit chain's seals: each page of the notification log the "seal" runner reads becomes one
seal, written in the same transaction as the runner's position (see domain/audit_chain.py for what
is hashed). The view takes the raw stored notifications of every topic (`Page.notifications`):
nothing is decoded, so no event can make a page fail but an unreachable store, and the runner that
feeds it retries a page until it commits, never skipping one.

A page costs two statements: the head seal, and the insert of the new one.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from moneta.domain.audit_chain import Seal, event_digest, new_seal
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, ViewStore, as_datetime

NAME = "seal"  # the tracking row of the runner that seals
TABLES = ("audit_seals",)
DDL = (
    """CREATE TABLE IF NOT EXISTS audit_seals (
        seq BIGINT PRIMARY KEY,
        previous TEXT NOT NULL,
        hash TEXT NOT NULL,
        first_position BIGINT NOT NULL,
        last_position BIGINT NOT NULL,
        events BIGINT NOT NULL,
        total BIGINT NOT NULL,
        positions TEXT NOT NULL,
        digests {bytes} NOT NULL,
        sealed_at {timestamp} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_seals_last_position ON audit_seals (last_position)",
)
EVENT_TYPES: tuple[type, ...] = ()  # decodes nothing: it reads `Page.notifications`
COLUMNS = ("seq", "previous", "hash", "first_position", "last_position", "events", "total", "positions", "digests",
           "sealed_at")
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit_seals"
_INSERT = f"INSERT INTO audit_seals ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"


def apply_page(cur: ViewCursor, page: Page) -> None:
    notifications = page.notifications
    if not notifications:
        return
    digests = [event_digest(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in notifications]
    sealed_at = datetime.now(UTC)
    seal = new_seal(head(cur), [n.id for n in notifications], digests, sealed_at)
    cur.execute(_INSERT, [getattr(seal, column) for column in COLUMNS])


def head(cur: ViewCursor) -> Seal | None:
    return _seal(cur.execute(f"{_SELECT} ORDER BY seq DESC LIMIT 1").one())


def covering(cur: ViewCursor, position: int) -> Seal | None:
    """The first seal whose range reaches `position` (None while it is not sealed yet)."""
    return _seal(cur.execute(f"{_SELECT} WHERE last_position >= ? ORDER BY last_position LIMIT 1",
                             (position,)).one())


def read_all(store: ViewStore, up_to_seq: int, page_size: int = 200) -> Iterator[Seal]:
    """Every seal up to `up_to_seq`, in seq order, a page of rows at a time."""
    after = 0
    while after < up_to_seq:
        with store.reading() as cur:
            rows = cur.execute(f"{_SELECT} WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                               (after, up_to_seq, page_size)).all()
        if not rows:
            return
        for row in rows:
            seal = _seal(row)
            assert seal is not None
            yield seal
        after = rows[-1]["seq"]


def _seal(row: dict[str, Any] | None) -> Seal | None:
    if row is None:
        return None
    sealed_at = as_datetime(row["sealed_at"])
    assert sealed_at is not None
    return Seal(seq=int(row["seq"]), previous=row["previous"], hash=row["hash"],
                first_position=int(row["first_position"]), last_position=int(row["last_position"]),
                events=int(row["events"]), total=int(row["total"]), positions=row["positions"],
                digests=bytes(row["digests"]), sealed_at=sealed_at)
