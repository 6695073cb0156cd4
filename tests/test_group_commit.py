"""Group commit: concurrent records share commits, each caller learns of durability, and an outage
of the real Postgres (a TCP proxy in front of it, cut and restored) costs a caller at most its
deadline, with the ledger holding exactly what the callers were told."""
from __future__ import annotations

import asyncio
import gc
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Iterator

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from moneta.domain.deployment_health import DeploymentHealth, health_id
from moneta.domain.errors import LedgerUnavailableError
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.infrastructure.aggregate_reader import EventStoreReader
from moneta.infrastructure.event_store import StoreLocation, migrate
from moneta.infrastructure.group_commit import GroupCommitLedger
from tests.tcp_proxy import TcpProxy

TIMEOUT_S = 2.0
SLACK_S = 1.5  # one try under way at the deadline (a 1 s wait for a connection), and the test's own time


def _admitted(request_id: uuid.UUID | None = None) -> RequestRecord:
    return RequestRecord.admit(request_id or uuid.uuid4(), call_type="chat", key_hash="k", end_user="",
                               model_group="m", stream=False)


def _completed_record() -> RequestRecord:
    record = _admitted()
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


def test_record_blocking_outside_an_event_loop(ledger):
    record = _completed_record()
    ledger.record_blocking(record, timeout=10)
    assert ledger.app.repository.get(record.id).outcome == "completed"


def _url_of(ledger: GroupCommitLedger) -> str:
    env = ledger.app.env
    if env.get("PERSISTENCE_MODULE") == "eventsourcing.sqlite":
        return "sqlite:///" + env.get("SQLITE_DBNAME")
    return f"postgresql://{env.get('POSTGRES_USER')}@{env.get('POSTGRES_HOST')}:{env.get('POSTGRES_PORT')}/" \
           f"{env.get('POSTGRES_DBNAME')}"


# -- a bad record in a batch -------------------------------------------------------------------


async def test_a_batch_with_a_conflicting_record_is_split_the_others_commit_and_only_it_fails(postgres_url,
                                                                                               monkeypatch):
    location = StoreLocation.from_url(postgres_url)
    migrate(location)
    ledger = GroupCommitLedger(location.open())
    saves = _spy_on_saves(ledger, monkeypatch)
    try:
        first = _completed_record()
        await ledger.record(first)
        clash = _admitted(first.id)  # the same stream at version 1 again
        others = [_completed_record() for _ in range(5)]
        with _writer_held(postgres_url, ledger):  # everything below is queued while it waits: one batch
            results = asyncio.gather(ledger.record(others[0]), ledger.record(clash),
                                     *(ledger.record(r) for r in others[1:]), return_exceptions=True)
        results = await results
    finally:
        ledger.close()
        ledger.app.close()

    assert isinstance(results[1], IntegrityError)
    assert results[:1] + results[2:] == [None] * 5
    # `first`, the record the writer was held on, then the batch of all six (11 events) fails and each
    # is saved alone
    assert saves == [(2, None), (2, None), (11, "IntegrityError"), (2, None), (1, "IntegrityError"),
                     (2, None), (2, None), (2, None), (2, None)]
    reader = EventStoreReader(location.open())
    try:
        assert all(reader.get(r.id).outcome == "completed" for r in others)
        assert reader.get(first.id).version == 2  # the conflicting Admitted was not written
    finally:
        reader.app.close()


def _spy_on_saves(ledger: GroupCommitLedger, monkeypatch) -> list[tuple[int, str | None]]:
    """Each save the writer makes: how many events, and the error it raised, if any."""
    saves: list[tuple[int, str | None]] = []
    save = ledger.app.save

    def spy(*events):
        try:
            recordings = save(*events)
        except Exception as error:
            saves.append((len(events), type(error).__name__))
            raise
        saves.append((len(events), None))
        return recordings

    monkeypatch.setattr(ledger.app, "save", spy)
    return saves


class _writer_held:
    """Holds the events table's lock, queues one record and waits until the writer blocks on it;
    on exit, releases the lock."""

    def __init__(self, url: str, ledger: GroupCommitLedger) -> None:
        self.url, self.ledger = url, ledger

    def __enter__(self) -> None:
        self.conn = psycopg.connect(self.url)
        self.conn.execute("LOCK TABLE moneta_events IN EXCLUSIVE MODE")
        self.held = self.ledger.record(_completed_record())
        deadline = time.monotonic() + 10
        while not self.conn.execute("SELECT count(*) FROM pg_locks"
                                    " WHERE relation = 'moneta_events'::regclass AND NOT granted").fetchone()[0]:
            assert time.monotonic() < deadline, "the writer never waited for the lock"
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self.conn.rollback()
        self.conn.close()


# -- outages, through a proxy in front of the real Postgres -----------------------------------


@pytest.fixture
def proxy(postgres_url) -> Iterator[TcpProxy]:
    with TcpProxy.in_front_of(postgres_url) as proxy:
        yield proxy


@pytest.fixture
def proxied_ledger(postgres_url, proxy) -> Iterator[GroupCommitLedger]:
    location = StoreLocation.from_url(proxy.url_for(postgres_url))
    migrate(location)
    ledger = GroupCommitLedger(location.open(), timeout_s=TIMEOUT_S)
    yield ledger
    ledger.close()
    ledger.app.close()


@pytest.fixture
def direct_reader(postgres_url) -> Iterator[EventStoreReader]:
    """Reads the ledger around the proxy: what was really committed."""
    app = StoreLocation.from_url(postgres_url).open()
    yield EventStoreReader(app)
    app.close()


async def _timed(futures: list) -> tuple[list, float]:
    started = time.monotonic()
    results = await asyncio.gather(*futures, return_exceptions=True)
    return results, time.monotonic() - started


async def test_records_queued_in_an_outage_fail_by_their_deadline_and_are_never_written(
        proxied_ledger, proxy, direct_reader):
    acknowledged = [_completed_record() for _ in range(20)]
    assert await asyncio.gather(*(proxied_ledger.record(r) for r in acknowledged)) == [None] * 20

    proxy.cut()
    refused = [_completed_record() for _ in range(20)]
    results, elapsed = await _timed([proxied_ledger.record(r) for r in refused])
    assert all(isinstance(result, LedgerUnavailableError) for result in results), results
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + SLACK_S  # retried until the deadline, not past it

    proxy.restore()
    later = [_completed_record() for _ in range(20)]
    results, elapsed = await _timed([proxied_ledger.record(r) for r in later])
    assert results == [None] * 20 and elapsed < TIMEOUT_S
    assert proxied_ledger.is_healthy()

    # records are written in the order queued: a refused record kept for later would be in by now
    assert all(direct_reader.get(r.id).outcome == "completed" for r in acknowledged + later)
    assert [r for r in refused if direct_reader.get(r.id) is not None] == []


async def test_an_outage_shorter_than_the_deadline_is_ridden_out(proxied_ledger, proxy, direct_reader):
    await proxied_ledger.record(_completed_record())  # the pool holds a connection the cut will kill
    proxy.cut()
    record = _completed_record()
    written = proxied_ledger.record(record)
    await asyncio.sleep(TIMEOUT_S / 3)
    assert not written.done() and not proxied_ledger.is_healthy()
    proxy.restore()
    await written
    assert direct_reader.get(record.id).outcome == "completed" and proxied_ledger.is_healthy()


async def test_a_record_whose_events_were_dropped_is_never_continued(proxied_ledger, proxy, direct_reader):
    proxy.cut()
    record = _admitted()
    with pytest.raises(LedgerUnavailableError):
        await proxied_ledger.record(record)  # Admitted is dropped
    proxy.restore()
    record.fail(status_code=500, error_type="server_error", reason="x")
    with pytest.raises(LedgerUnavailableError, match="lost the start"):
        await proxied_ledger.record(record)
    assert direct_reader.get(record.id) is None


async def test_the_records_remembered_as_broken_are_forgotten_with_them(proxied_ledger, proxy):
    proxy.cut()
    records = [_admitted() for _ in range(50)]
    await asyncio.gather(*(proxied_ledger.record(r) for r in records), return_exceptions=True)
    assert len(proxied_ledger._broken) == 50  # what bounds it: only records still referenced are kept
    del records
    gc.collect()
    assert len(proxied_ledger._broken) == 0


async def test_a_stream_read_afresh_after_an_outage_is_continued(proxied_ledger, proxy, direct_reader):
    """The health journal reloads a deployment's stream before each change: an event lost in an
    outage must not bar that stream for good."""
    health = DeploymentHealth.register("d1", "m")
    await proxied_ledger.record(health)
    proxy.cut()
    health.cool_down(until=datetime.now(UTC), status_code=500, error_type="server_error", reason="x")
    with pytest.raises(LedgerUnavailableError):
        await proxied_ledger.record(health)
    proxy.restore()
    fresh = direct_reader.get(health_id("d1"))
    fresh.cool_down(until=datetime.now(UTC), status_code=500, error_type="server_error", reason="y")
    await proxied_ledger.record(fresh)
    assert direct_reader.get(health_id("d1")).version == 2
