"""Many small streams read in one statement: the library reads one stream per statement, and a batch
of 100 usage deliveries would otherwise cost 100 round trips before anything is sent (under load,
most of the deliverer's time). The events are the library's own rows, decoded by its mapper and
folded as its repository folds them.
"""
from __future__ import annotations

from itertools import groupby
from typing import Any, Sequence
from uuid import UUID

from eventsourcing.application import project_aggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier

from moneta.infrastructure.aggregate_reader import EventStoreReader


class StreamBatchReader(EventStoreReader):
    def get_many(self, aggregate_ids: Sequence[UUID]) -> dict[UUID, Any]:
        """The aggregates among `aggregate_ids` that have events, at their latest version."""
        if not aggregate_ids:
            return {}
        stored = self._select(sorted(set(aggregate_ids)))
        return {aggregate_id: project_aggregate(None, map(self.app.mapper.to_domain_event, events))
                for aggregate_id, events in groupby(stored, key=lambda event: event.originator_id)}

    def _select(self, aggregate_ids: list[UUID]) -> list[StoredEvent]:
        recorder = self.app.recorder
        if isinstance(recorder, PostgresApplicationRecorder):
            statement = SQL("SELECT originator_id, originator_version, topic, state FROM {schema}.{table}"
                            " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version").format(
                schema=Identifier(recorder.datastore.schema), table=Identifier(recorder.events_table_name))
            with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
                cursor.execute(statement, (aggregate_ids,))
                rows = cursor.fetchall()
            return [StoredEvent(row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"]))
                    for row in rows]
        marks = ", ".join("?" for _ in aggregate_ids)
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT originator_id, originator_version, topic, state FROM {recorder.events_table_name}"
                           f" WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version",
                           [aggregate_id.hex for aggregate_id in aggregate_ids])
            rows = cursor.fetchall()
        return [StoredEvent(UUID(row["originator_id"]), row["originator_version"], row["topic"], row["state"])
                for row in rows]
