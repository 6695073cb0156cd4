"""Reading the whole ledger for an audit, a page at a time: in constant memory, however long it is.

`preimages` gives each stored event as the audit chain hashes it (see domain/audit_chain.py),
read straight from the events table: on Postgres the encoding is built by the server and sent in
binary, ranges of positions fetched ahead on other connections while the client hashes (no
per-event Python object besides the row). `events` gives the decoded events with their positions, for the audit queries.
"""
from __future__ import annotations

import sqlite3
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from itertools import islice
from datetime import datetime
from typing import Any

import psycopg
from eventsourcing.persistence import Notification
from eventsourcing.utils import resolve_topic
from psycopg import sql

from moneta.domain.audit_chain import Row, event_preimage
from moneta.infrastructure.event_store import LedgerApplication, StoreLocation

_PREIMAGE = ("int8send(notification_id) || uuid_send(originator_id) || int8send(originator_version)"
             " || int4send(octet_length(topic)) || convert_to(topic, 'UTF8') || int4send(octet_length(state)) || state")


class LedgerScan:
    def __init__(self, app: LedgerApplication, location: StoreLocation, page_size: int = 5000,
                 fetchers: int = 3) -> None:
        self.app = app
        self.location = location
        self.page_size = page_size
        self.fetchers = fetchers
        self.table = app.recorder.events_table_name  # type: ignore[attr-defined]

    # -- raw, for the chain ----------------------------------------------------------------------

    def preimages(self, after: int, up_to: int) -> Iterator[list[Row]]:
        """The events at positions in (after, up_to], in position order, a page at a time."""
        if self.location.kind == "postgres":
            return self._postgres_preimages(after, up_to)
        return self._sqlite_preimages(after, up_to)

    def count_after(self, position: int) -> int:
        if self.location.kind == "postgres":
            with psycopg.connect(self.location.postgres_dsn) as conn:
                query = sql.SQL("SELECT COUNT(*) FROM {} WHERE notification_id > %s").format(self._postgres_table())
                (count,) = conn.execute(query, (position,)).fetchone()  # type: ignore[misc]
                return int(count)
        with self._sqlite() as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {self.table} WHERE rowid > ?", (position,)).fetchone()[0])

    def _postgres_table(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.app.recorder.datastore.schema),  # type: ignore[attr-defined]
                                       sql.Identifier(self.table))

    def _postgres_preimages(self, after: int, up_to: int) -> Iterator[list[Row]]:
        """Ranges of `page_size` positions, fetched by `fetchers` threads on connections of their own
        while this one hashes, in order, at most two ranges per thread ahead (constant memory)."""
        query = sql.SQL(f"SELECT notification_id, {_PREIMAGE} FROM {{}} WHERE notification_id > %s"
                        " AND notification_id <= %s ORDER BY notification_id").format(self._postgres_table())
        ranges = ((start, min(start + self.page_size, up_to)) for start in range(after, up_to, self.page_size))
        connections: list[psycopg.Connection[Any]] = []
        local = threading.local()

        def fetch(bounds: tuple[int, int]) -> list[Row]:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = psycopg.connect(self.location.postgres_dsn, autocommit=True)
                connections.append(conn)
            with conn.cursor(binary=True) as cursor:
                return cursor.execute(query, bounds, prepare=True).fetchall()  # type: ignore[return-value]

        try:
            with ThreadPoolExecutor(self.fetchers, thread_name_prefix="moneta-audit-scan") as pool:
                ahead: deque[Future[list[Row]]] = deque(pool.submit(fetch, bounds)
                                                        for bounds in islice(ranges, 2 * self.fetchers))
                while ahead:
                    rows = ahead.popleft().result()
                    ahead.extend(pool.submit(fetch, bounds) for bounds in islice(ranges, 1))
                    if rows:
                        yield rows
        finally:
            for conn in connections:
                conn.close()

    def _sqlite_preimages(self, after: int, up_to: int) -> Iterator[list[Row]]:
        with self._sqlite() as conn:
            cursor = conn.execute(f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.table}"
                                  " WHERE rowid > ? AND rowid <= ? ORDER BY rowid", (after, up_to))
            while rows := cursor.fetchmany(self.page_size):
                yield [(row[0], _sqlite_preimage(row)) for row in rows]

    def _sqlite(self) -> closing[sqlite3.Connection]:
        return closing(sqlite3.connect(f"file:{self.location.sqlite_path}?mode=ro", uri=True))

    # -- decoded, for the audit queries ----------------------------------------------------------

    def events(self, after: int = 0, types: tuple[type, ...] = (), page_size: int = 1000
               ) -> Iterator[list[tuple[int, Any]]]:
        """(position, event) of the events after `after`, a page at a time; of `types` only when given."""
        while True:
            notifications = self.app.recorder.select_notifications(after, page_size, inclusive_of_start=False)
            if not notifications:
                return
            yield [(n.id, self.app.mapper.to_domain_event(n)) for n in notifications
                   if not types or issubclass(resolve_topic(n.topic), types)]
            after = notifications[-1].id

    def position_before(self, moment: datetime) -> int:
        """A position at or before which every event was stamped before `moment`, found by bisecting
        the log (0 when there is none): events are committed in about the order they are stamped
        (see application/audit_time.py), so the caller passes a moment early by that margin."""
        low, high = 0, self.app.recorder.max_notification_id() or 0
        while low < high:
            middle = (low + high + 1) // 2
            found = self._first_at_or_after(middle)
            if found is None or self._stamped(found) >= moment:
                high = middle - 1
            else:
                low = found.id
        return low

    def _first_at_or_after(self, position: int) -> Notification | None:
        found = self.app.recorder.select_notifications(position, 1)
        return found[0] if found else None

    def _stamped(self, notification: Notification) -> datetime:
        return self.app.mapper.to_domain_event(notification).timestamp


def _sqlite_preimage(row: Sequence[Any]) -> bytes | None:
    """None when the row cannot be encoded at all (an id that is not a UUID, a NULL): altered."""
    position, originator_id, version, topic, state = row
    try:
        return event_preimage(position, uuid.UUID(originator_id).bytes, version, topic.encode(), state)
    except (TypeError, ValueError, AttributeError):
        return None
