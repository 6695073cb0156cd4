"""Requests admitted and not yet settled, with the gateway process that runs each: what the
sweeper (`application.abandonment`) looks at to close the calls of a process that is gone."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from moneta.domain.request_record import RequestRecord
from moneta.projections import instances
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, ViewStore, as_datetime

TABLES = ("requests_in_flight",)
DDL = (
    """CREATE TABLE IF NOT EXISTS requests_in_flight (
        request_id TEXT PRIMARY KEY,
        instance TEXT NOT NULL,
        admitted_at {timestamp} NOT NULL
    )""",
)
_ENDINGS = (RequestRecord.Completed, RequestRecord.Failed, RequestRecord.Abandoned,  # Interrupted is a Completed
            RequestRecord.CacheHit)
EVENT_TYPES = (RequestRecord.Admitted, RequestRecord.Interrupted, *_ENDINGS)


def apply_page(cur: ViewCursor, page: Page) -> None:
    opened = {page.stream_id(e): e for e in page.of(RequestRecord.Admitted)}
    ended = {page.stream_id(e) for e in page.of(_ENDINGS)}
    still_open = [(request_id, e.instance, e.timestamp) for request_id, e in opened.items() if request_id not in ended]
    if still_open:
        cur.executemany("INSERT INTO requests_in_flight (request_id, instance, admitted_at) VALUES (?, ?, ?)"
                        " ON CONFLICT (request_id) DO NOTHING", still_open)
    closed_before = sorted(ended - opened.keys())
    if closed_before:
        cur.execute(f"DELETE FROM requests_in_flight WHERE {cur.any_of('request_id')}", (closed_before,))


@dataclass(frozen=True)
class InFlight:
    request_id: UUID
    instance: str
    admitted_at: datetime


class InFlightQueries:
    """`application.abandonment.InFlightView` over the views' database."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store

    def admitted_before(self, when: datetime) -> list[InFlight]:
        with self.store.reading() as cur:
            rows = cur.execute("SELECT request_id, instance, admitted_at FROM requests_in_flight"
                               " WHERE admitted_at < ? ORDER BY admitted_at", (when,)).all()
        return [InFlight(UUID(row["request_id"]), row["instance"], as_datetime(row["admitted_at"])) for row in rows]

    def last_beats(self) -> dict[str, datetime]:
        with self.store.reading() as cur:
            return instances.last_beats(cur)
