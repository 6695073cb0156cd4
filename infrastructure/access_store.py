"""The access entities' streams in the event store (management commands are rare: one save, one
commit each, outside the group-commit path of the calls)."""
from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from moneta.domain.access import AccessEntity
from moneta.domain.errors import ConflictError


class EventStoreAccess:
    def __init__(self, app: Application) -> None:
        self.app = app

    def get(self, aggregate_id: UUID) -> Any | None:
        try:
            return self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def save(self, *entities: AccessEntity) -> None:
        try:
            self.app.save(*entities)
        except IntegrityError:
            raise ConflictError("Someone else changed this at the same moment; read it again and retry.",
                                code="concurrent_change") from None
