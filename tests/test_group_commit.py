"""Group commit: concurrent records share transactions and each caller learns of durability."""
from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest

from moneta.domain.errors import LedgerUnavailableError
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.infrastructure.event_store import StoreLocation, migrate
from moneta.infrastructure.group_commit import GroupCommitLedger


def _completed_record() -> RequestRecord:
    record = RequestRecord.admit(uuid.uuid4(), call_type="chat", key_hash="k", end_user="", model_group="m",
                                 stream=False)
    record.complete(deployment_id="d", provider="mock", provider_model="m", usage=Usage(3, 4),
                    cost=Decimal("0.000011"), price_source="test", latency_ms=1.0)
    return record


@pytest.fixture
def ledger(ledger_url):
    location = StoreLocation.from_url(ledger_url)
    migrate(location)
    writer = GroupCommitLedger(location.open())
    yield writer
    writer.close()
    writer.app.close()


async def test_concurrent_records_share_commits_and_are_all_durable(ledger):
    records = [_completed_record() for _ in range(300)]
    await asyncio.gather(*(ledger.record(r) for r in records))
    assert ledger.events_written == 600
    assert ledger.commits < len(records)  # they were grouped
    reader = StoreLocation.from_url(_url_of(ledger)).open()
    try:
        for record in records[:: 37]:
            stored = reader.repository.get(record.id)
            assert stored.outcome == "completed" and stored.cost == Decimal("0.000011")
    finally:
        reader.close()


async def test_a_bad_record_fails_alone(ledger):
    good = _completed_record()
    duplicate = RequestRecord.admit(good.id, call_type="chat", key_hash="k", end_user="", model_group="m",
                                    stream=False)  # same stream id, version 1 again: a conflict
    await ledger.record(good)
    others = [_completed_record() for _ in range(5)]
    results = await asyncio.gather(ledger.record(duplicate), *(ledger.record(r) for r in others),
                                   return_exceptions=True)
    assert isinstance(results[0], Exception) and not isinstance(results[0], LedgerUnavailableError)
    assert results[1:] == [None] * 5


def test_record_blocking_outside_an_event_loop(ledger):
    record = _completed_record()
    ledger.record_blocking(record, timeout=10)
    assert ledger.app.repository.get(record.id).outcome == "completed"


class _FlakyStore:
    """Stands in for the event store during an outage of `failures` saves."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.saved: list = []

    def save(self, *events):
        from eventsourcing.persistence import OperationalError

        if self.failures:
            self.failures -= 1
            raise OperationalError("connection refused")
        self.saved.extend(events)


def test_a_short_outage_is_ridden_out():
    store = _FlakyStore(failures=3)
    writer = GroupCommitLedger(store, retry_for_s=5)  # type: ignore[arg-type]
    try:
        writer.record_blocking(_completed_record(), timeout=10)
        assert len(store.saved) == 2 and writer.is_healthy()
    finally:
        writer.close()


def test_a_long_outage_fails_the_write_instead_of_hanging():
    store = _FlakyStore(failures=10**6)
    writer = GroupCommitLedger(store, retry_for_s=0.3)  # type: ignore[arg-type]
    try:
        with pytest.raises(LedgerUnavailableError):
            writer.record_blocking(_completed_record(), timeout=10)
        assert not writer.is_healthy()
    finally:
        writer.close()


def _url_of(ledger: GroupCommitLedger) -> str:
    env = ledger.app.env
    if env.get("PERSISTENCE_MODULE") == "eventsourcing.sqlite":
        return "sqlite:///" + env.get("SQLITE_DBNAME")
    return f"postgresql://{env.get('POSTGRES_USER')}@{env.get('POSTGRES_HOST')}:{env.get('POSTGRES_PORT')}/" \
           f"{env.get('POSTGRES_DBNAME')}"


def test_a_stream_whose_beginning_was_lost_is_not_continued():
    store = _FlakyStore(failures=10**6)
    writer = GroupCommitLedger(store, retry_for_s=0.1)  # type: ignore[arg-type]
    try:
        record = RequestRecord.admit(uuid.uuid4(), call_type="chat", key_hash="k", end_user="", model_group="m",
                                     stream=False)
        with pytest.raises(LedgerUnavailableError):
            writer.record_blocking(record, timeout=10)  # Admitted is lost in the outage
        store.failures = 0  # the store is back
        record.fail(status_code=500, error_type="server_error", reason="x")
        with pytest.raises(LedgerUnavailableError, match="lost the start"):
            writer.record_blocking(record, timeout=10)
        assert store.saved == []
    finally:
        writer.close()
