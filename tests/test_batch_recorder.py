"""ColumnArrayRecorder on real Postgres keeps what the library's recorder guarantees."""
from __future__ import annotations

import asyncio
import threading
import uuid
from decimal import Decimal

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.infrastructure.batch_recorder import ColumnArrayRecorder
from moneta.infrastructure.event_store import StoreLocation, migrate
from moneta.infrastructure.group_commit import GroupCommitLedger

CHANNEL = "moneta_events"  # what projections/runner.py LISTENs on


def _completed(request_id: uuid.UUID | None = None) -> RequestRecord:
    record = RequestRecord.admit(request_id or uuid.uuid4(), call_type="chat", key_hash="k", end_user="",
                                 model_group="m", stream=False)
    record.complete(deployment_id="d", provider="mock", provider_model="m", usage=Usage(3, 4),
                    cost=Decimal("0.000011"), price_source="test", latency_ms=1.0)
    return record


def _events(records: list[RequestRecord]) -> list:
    return [event for record in records for event in record.collect_events()]


@pytest.fixture
def location(postgres_url):
    location = StoreLocation.from_url(postgres_url)
    migrate(location)
    return location


@pytest.fixture
def app(location):
    app = location.open()
    yield app
    app.close()


def _stored(app, records: list[RequestRecord]) -> list:
    return [app.mapper.to_stored_event(event) for event in _events(records)]


def test_the_ledger_writes_through_the_column_array_recorder(app):
    assert type(app.recorder) is ColumnArrayRecorder


def test_a_batch_is_durable_and_readable_in_order(app, location):
    records = [_completed() for _ in range(32)]
    events = _events(records)
    recordings = app.save(*events)
    assert [r.notification.originator_id for r in recordings] == [e.originator_id for e in events]

    reader = location.open()  # another connection pool: what was committed
    try:
        notifications = reader.recorder.select_notifications(start=None, limit=100)
        assert [(n.originator_id, n.originator_version) for n in notifications] == \
            [(e.originator_id, e.originator_version) for e in events]
        assert [n.id for n in notifications] == [r.notification.id for r in recordings]
        stored = reader.repository.get(records[7].id)
        assert (stored.outcome, stored.cost) == ("completed", Decimal("0.000011"))
    finally:
        reader.close()


def test_notification_ids_are_dense_and_ascending(app):
    ids = [app.recorder.insert_events(_stored(app, [_completed() for _ in range(n)])) for n in (1, 16, 50)]
    flat = [i for batch in ids for i in batch]
    assert [len(batch) for batch in ids] == [2, 32, 100]
    assert flat == list(range(flat[0], flat[0] + len(flat)))
    assert app.recorder.max_notification_id() == flat[-1]


def test_a_conflict_raises_the_librarys_integrity_error_and_saves_nothing_of_its_batch(app):
    first = _completed()
    app.save(first)
    others = [_completed() for _ in range(3)]
    clash = RequestRecord.admit(first.id, call_type="chat", key_hash="k", end_user="", model_group="m",
                                stream=False)
    with pytest.raises(IntegrityError):
        app.recorder.insert_events(_stored(app, [others[0], clash, others[1]]))
    assert all(app.recorder.select_events(r.id) == [] for r in others)
    assert app.repository.get(first.id).version == 2  # the conflicting Admitted was not written


async def test_group_commit_splits_out_the_conflict_and_saves_the_rest(app):
    ledger = GroupCommitLedger(app)
    try:
        first = _completed()
        await ledger.record(first)
        clash = RequestRecord.admit(first.id, call_type="chat", key_hash="k", end_user="", model_group="m",
                                    stream=False)
        others = [_completed() for _ in range(5)]
        results = await asyncio.gather(ledger.record(others[0]), ledger.record(clash),
                                       *(ledger.record(r) for r in others[1:]), return_exceptions=True)
    finally:
        ledger.close()
    assert isinstance(results[1], IntegrityError)
    assert results[:1] + results[2:] == [None] * 5
    assert all(app.repository.get(r.id).outcome == "completed" for r in others)


def test_listen_receives_the_notification(app, location):
    with psycopg.connect(location.postgres_dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        app.save(*_events([_completed()]))
        received = [n.channel for n in listener.notifies(timeout=5, stop_after=1)]
    assert received == [CHANNEL]


class _Recorder(ColumnArrayRecorder):
    """With `hold`, keeps its transaction open after inserting (ids issued, not committed) until
    released; without `lock`, skips the table lock (the canary's broken recorder)."""

    def __init__(self, datastore, *, events_table_name: str, lock: bool, hold: bool) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.lock, self.hold = lock, hold
        self.inserted, self.release = threading.Event(), threading.Event()

    def _lock_table(self, curs) -> None:
        if self.lock:
            super()._lock_table(curs)

    def _fetch_ids_after_insert_events(self, curs, stored_events, **kwargs):
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        self.inserted.set()
        if self.hold:
            assert self.release.wait(10)
        return ids


def _overtake(app, *, lock: bool) -> tuple[list[int], list[int], list[int]]:
    """Writer A takes its ids and holds its commit while writer B writes; a tailing reader
    reads in between. Returns (A's ids, B's ids, the ids the reader saw while A held)."""
    recorders = [_Recorder(app.factory.datastore, events_table_name=app.recorder.events_table_name,
                           lock=lock, hold=hold) for hold in (True, False)]
    ids: dict[int, list[int]] = {}

    def write(n: int) -> None:
        ids[n] = recorders[n].insert_events(_stored(app, [_completed()]))

    a, b = (threading.Thread(target=write, args=(n,)) for n in (0, 1))
    a.start()
    assert recorders[0].inserted.wait(10)
    b.start()
    b.join(1.0)  # B commits now unless the table lock makes it wait for A
    seen_while_held = [n.id for n in app.recorder.select_notifications(start=None, limit=100)]
    recorders[0].release.set()
    a.join(10)
    b.join(10)
    return ids[0], ids[1], seen_while_held


def test_a_writer_waits_for_the_one_holding_ids_so_a_tailing_reader_never_skips(app):
    a_ids, b_ids, seen = _overtake(app, lock=True)
    assert seen == [] and max(a_ids) < min(b_ids)
    everything = [n.id for n in app.recorder.select_notifications(start=None, limit=100)]
    assert everything == a_ids + b_ids


def test_without_the_table_lock_the_reader_would_skip_ids(app):
    """The canary: proves the test above can fail."""
    a_ids, b_ids, seen = _overtake(app, lock=False)
    assert seen == b_ids and max(a_ids) < min(b_ids)  # a reader now at max(seen) never reads a_ids


def test_two_concurrent_writers_never_make_a_tailing_reader_skip(app, location):
    writers = [location.open() for _ in range(2)]
    stop = threading.Event()
    seen: list[int] = []

    def write(writer) -> None:
        for _ in range(40):
            writer.save(*_events([_completed() for _ in range(8)]))

    def tail() -> None:
        position = 0
        while True:
            done = stop.is_set()  # read once more after the writers finished
            page = app.recorder.select_notifications(start=position, limit=1000, inclusive_of_start=False)
            seen.extend(n.id for n in page)
            position = seen[-1] if seen else position
            if done and not page:
                return

    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    reader = threading.Thread(target=tail)
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    reader.join(60)
    for writer in writers:
        writer.close()
    committed = [n.id for n in app.recorder.select_notifications(start=None, limit=10_000)]
    assert len(committed) == 2 * 40 * 8 * 2
    assert seen == committed
