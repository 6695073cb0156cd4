"""Reads the event store: one aggregate at its latest version, one stream's events, and how far the
log reaches."""
from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application


class EventStoreReader:
    def __init__(self, app: Application) -> None:
        self.app = app

    def get(self, aggregate_id: UUID) -> Any | None:
        try:
            return self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def events(self, stream_id: UUID) -> list[Any]:
        """The stream's events in order, each in its class's current shape ([] for no stream)."""
        return list(self.app.events.get(stream_id))

    def head(self) -> int:
        """The last notification id committed (0 for an empty ledger); raises when unreachable."""
        return self.app.recorder.max_notification_id() or 0
