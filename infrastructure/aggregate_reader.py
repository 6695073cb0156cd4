"""Reads one aggregate from the event store at its latest version."""
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
