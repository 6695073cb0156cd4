"""LedgerApplication.save behaves as the library's Application.save, events or aggregates."""
from __future__ import annotations

import uuid
from decimal import Decimal

from eventsourcing.application import Application

from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.infrastructure.event_store import APP_NAME, StoreLocation, migrate


class _Library(Application):
    name = APP_NAME


def _completed() -> RequestRecord:
    record = RequestRecord.admit(uuid.uuid4(), call_type="chat", key_hash="k", end_user="", model_group="m",
                                 stream=False)
    record.complete(deployment_id="d", provider="mock", provider_model="m", usage=Usage(3, 4),
                    cost=Decimal("0.000011"), price_source="test", latency_ms=1.0)
    return record


def _shape(recordings) -> list[tuple]:
    return [(type(r.domain_event), r.notification.originator_version, r.notification.topic) for r in recordings]


def test_saving_events_aggregates_and_none_matches_the_library(ledger_url):
    location = StoreLocation.from_url(ledger_url)
    migrate(location)
    ours, library = location.open(), _Library(env={**location.env, "CREATE_TABLE": "n"})
    try:
        results = []
        for app in (ours, library):
            as_events, as_aggregate = _completed(), _completed()
            recordings = app.save(*as_events.collect_events(), None, as_aggregate)
            stored = [app.repository.get(r.id) for r in (as_events, as_aggregate)]
            assert [(s.outcome, s.cost, s.version) for s in stored] == [("completed", Decimal("0.000011"), 2)] * 2
            results.append(_shape(recordings))
        assert results[0] == results[1] and len(results[0]) == 4
    finally:
        ours.close()
        library.close()
