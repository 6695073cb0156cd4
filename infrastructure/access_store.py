"""The access entities' streams in the event store (management commands are rare: one save, one
commit each, outside the group-commit path of the calls)."""
from __future__ import annotations

from eventsourcing.persistence import IntegrityError

from moneta.domain.access import AccessEntity
from moneta.domain.errors import ConflictError
from moneta.infrastructure.aggregate_reader import EventStoreReader


class EventStoreAccess(EventStoreReader):
    """Reads an entity as any aggregate is read; saves a change as one commit of its own."""

    def save(self, *entities: AccessEntity) -> None:
        try:
            self.app.save(*entities)
        except IntegrityError:
            raise ConflictError("Someone else changed this at the same moment; read it again and retry.",
                                code="concurrent_change") from None
