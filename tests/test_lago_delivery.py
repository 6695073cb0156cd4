"""Usage reported to Lago through the outbox, against the fake Lago over the wire: batches of at most
100 with the exact body Lago expects, retries under 429s, 500s, stalls and an outage, a refused
batch sent one by one (a duplicate is delivered, an invalid event parked then sent again), a
rebuild that sends nothing new, and a kill -9 of `moneta serve` in the middle of a delivery."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from moneta.application.lago_delivery import LagoBackground
from moneta.domain.lago_usage import BilledCall, LagoUsage, amount_cents, usage_event
from tests.fake_lago import FakeLago
from tests.lago_usage_world import (
    CODE, Clock, admit, bill, deliverer, drain, lago, outcomes, settle, usage, usage_events,  # noqa: F401
)
from tests.ledger_world import TINY, World
from tests.live_server import LiveServer

Delivered, Failed, Parked, Requeued = LagoUsage.Delivered, LagoUsage.DeliveryFailed, LagoUsage.Parked, \
    LagoUsage.Requeued


def posts(fake: FakeLago, path: str = "/events/batch") -> list:
    return [seen for seen in fake.requests if seen.method == "POST" and seen.path == path]


def held(events) -> Counter:
    """How many times Lago holds each transaction_id."""
    return Counter(event["transaction_id"] for event in events.stored())


def ledger_events(world: World, stream_id) -> list:
    return [world.app.mapper.to_domain_event(stored) for stored in world.app.recorder.select_events(stream_id)]


def unix(at: datetime) -> str:
    return f"{int(at.timestamp())}.{at.microsecond // 1000:03d}"


@pytest.fixture
def sqlite_world(sqlite_url):
    world = World(sqlite_url)
    yield world
    world.close()


# -- the domain: the event Lago gets --------------------------------------------------------------

def test_the_usage_event_is_built_from_the_ledger_alone_and_exactly():
    record = settle(admit("sub_9", customer="cus_9"), Decimal("0.000123"))
    completed = record.collect_events()[-1]
    call = BilledCall.of(str(record.id), "cus_9", "sub_9", "gpt-4o-mini", completed)
    assert usage_event(call, "llm_usage") == {
        "transaction_id": str(record.id), "external_subscription_id": "sub_9", "code": "llm_usage",
        "timestamp": unix(completed.timestamp), "precise_total_amount_cents": "0.0123",
        "properties": {"usd": "0.000123", "askii": "0.123000", "model": "gpt-4o-mini", "provider": "openai",
                       "provider_model": "gpt-4o-mini-2024-07-18", "tokens": 15, "prompt_tokens": 10,
                       "completion_tokens": 5, "cached_tokens": 0, "reasoning_tokens": 0}}
    assert usage_event(call, "llm_usage") == usage_event(BilledCall.of(str(record.id), "cus_9", "sub_9", "gpt-4o-mini",
                                                                       completed), "llm_usage")
    assert amount_cents(TINY) == "0.0000000000000001" and amount_cents(Decimal("1E+1")) == "1000"
    assert amount_cents(Decimal(0)) == "0"


def test_a_settled_usage_stream_is_sent_again_only_when_requeued():
    usage_stream = LagoUsage.open("r1", "sub_1")
    usage_stream.failed(status=503, reason="HTTP 503", retry_at=datetime.now(UTC))
    with pytest.raises(ValueError, match="sent anyway"):
        usage_stream.requeue(actor="me", reason="why not")
    usage_stream.park(status=404, reason="HTTP 404: subscription_not_found")
    with pytest.raises(ValueError, match="already parked"):
        usage_stream.delivered(batch_size=1)
    usage_stream.requeue(actor="retry-parked", reason="fixed")
    usage_stream.delivered(batch_size=1)
    assert (usage_stream.status, usage_stream.attempts) == ("delivered", 3)


# -- the outbox view ------------------------------------------------------------------------------

def test_a_page_of_1_or_200_billed_calls_costs_the_outbox_the_same_statements(sqlite_world):
    from moneta.projections import lago_outbox
    from tests.test_projection_pages import Counted

    view = Counted(lago_outbox)
    runner = sqlite_world.new_runner(sqlite_world.store, name="counted", views=[view], page_size=1000)
    runner.create_tables()
    for size in (1, 200):
        earlier = [admit("sub_1") for _ in range(size)]
        sqlite_world.app.save(*earlier)
        runner.catch_up()  # admissions only: their pending rows
        for record in earlier:
            settle(record, Decimal("0.001"))
        failed = admit("sub_1")
        failed.fail(status_code=503, error_type="ServiceUnavailableError", reason="down")
        sqlite_world.app.save(*earlier, *(settle(admit("sub_1"), Decimal("0.002")) for _ in range(size)),
                              *(admit("sub_2") for _ in range(size)), settle(admit(None), Decimal("0.1")), failed)
        runner.catch_up()  # outcomes of earlier pages, whole calls, new admissions, a call not billed, a failure
    assert view.statements == [1, 5, 1, 5]
    with sqlite_world.store.reading() as cur:
        assert cur.execute("SELECT COUNT(*) AS n FROM lago_outbox").one()["n"] == 402
        assert cur.execute("SELECT COUNT(*) AS n FROM lago_deliveries").one()["n"] == 402
        assert cur.execute("SELECT COUNT(*) AS n FROM lago_pending").one()["n"] == 201


# -- delivery -----------------------------------------------------------------------------------

async def test_billed_calls_reach_lago_in_batches_of_100_with_the_exact_body(world, lago):
    fake, events = lago
    records = bill(world, 249)
    interrupted = settle(admit("sub_2"), Decimal("0.5"), interrupted=True)
    not_billed = settle(admit(None), Decimal("0.2"))  # no Lago subscription in its decision
    failed = admit("sub_1")
    failed.fail(status_code=503, error_type="ServiceUnavailableError", reason="down")
    world.app.save(interrupted, not_billed, failed)
    world.runner.catch_up()

    delivery = deliverer(world, fake)
    assert await drain(delivery) == 250
    await delivery.lago.close()

    assert [len(seen.body["events"]) for seen in posts(fake)] == [100, 100, 50]
    assert all(seen.headers["Authorization"] == f"Bearer {fake.api_key}" for seen in fake.requests)
    assert held(events) == Counter({str(r.id): 1 for r in (*records, interrupted)})
    first = records[0]
    completed = ledger_events(world, first.id)[-1]
    sent = next(e for seen in posts(fake) for e in seen.body["events"] if e["transaction_id"] == str(first.id))
    assert sent == {"transaction_id": str(first.id), "external_subscription_id": "sub_1", "code": CODE,
                    "timestamp": unix(completed.timestamp), "precise_total_amount_cents": "0.0123",
                    "properties": {"usd": "0.000123", "askii": "0.123000", "model": "gpt-4o-mini", "provider": "openai",
                                   "provider_model": "gpt-4o-mini-2024-07-18", "tokens": 15, "prompt_tokens": 10,
                                   "completion_tokens": 5, "cached_tokens": 0, "reasoning_tokens": 0}}
    stored = next(e for e in events.stored() if e["transaction_id"] == str(interrupted.id))
    assert stored["external_subscription_id"] == "sub_2" and stored["precise_total_amount_cents"] == "50.0"
    opened, delivered = usage_events(world, first.id)
    assert (opened.request_id, opened.subscription) == (str(first.id), "sub_1")
    assert (type(delivered), delivered.attempt, delivered.batch_size, delivered.duplicate) == (Delivered, 1, 100, False)
    assert usage(world, not_billed.id) is None and usage(world, failed.id) is None

    assert await drain(delivery) == 0  # delivered calls are not due again
    await delivery.lago.close()
    assert len(posts(fake)) == 3


async def test_bursts_of_429_wait_for_retry_after_and_rate_limit_reset(sqlite_world, lago):
    fake, events = lago
    records = bill(sqlite_world, 30)
    fake.fail_next(1, 429, headers={"Retry-After": "7"}, path_prefix="/events")
    fake.fail_next(1, 429, headers={"X-RateLimit-Reset": "4"}, path_prefix="/events")
    clock = Clock()
    start = clock()
    delivery = deliverer(sqlite_world, fake, clock)

    assert await delivery.deliver_due() == 30  # 429, Retry-After: 7
    clock.advance(6.9)
    assert await delivery.deliver_due() == 0
    assert len(posts(fake)) == 1  # nothing at all is sent before Lago said
    clock.advance(0.2)
    assert await delivery.deliver_due() == 30  # 429, X-RateLimit-Reset: 4
    clock.advance(3.9)
    assert await delivery.deliver_due() == 0
    clock.advance(0.2)
    assert await delivery.deliver_due() == 30
    await delivery.lago.close()

    assert len(posts(fake)) == 3 and held(events) == Counter({str(r.id): 1 for r in records})
    _, first, second, delivered = usage_events(sqlite_world, records[0].id)
    assert (type(first), first.status, first.reason) == (Failed, 429, "HTTP 429: Too Many Requests")
    assert first.retry_at == start + timedelta(seconds=7)
    assert (second.status, second.attempt, second.retry_at) == (429, 2, start + timedelta(seconds=7.1 + 4))
    assert (type(delivered), delivered.attempt) == (Delivered, 3)


async def test_500s_are_retried_with_doubling_backoff(sqlite_world, lago):
    fake, events = lago
    records = bill(sqlite_world, 5)
    fake.fail_next(2, 500, path_prefix="/events")
    clock = Clock()
    delivery = deliverer(sqlite_world, fake, clock, backoff_s=2.0)
    assert await delivery.deliver_due() == 5
    clock.advance(1.9)
    assert await delivery.deliver_due() == 0  # not before its backoff
    clock.advance(0.1)
    assert await delivery.deliver_due() == 5  # 500 again: the wait doubles
    clock.advance(3.9)
    assert await delivery.deliver_due() == 0
    clock.advance(0.1)
    assert await delivery.deliver_due() == 5
    await delivery.lago.close()

    _, first, second, delivered = usage_events(sqlite_world, records[0].id)
    assert (first.status, second.status) == (500, 500)
    assert second.retry_at - first.retry_at == timedelta(seconds=4)
    assert type(delivered) is Delivered and held(events) == Counter({str(r.id): 1 for r in records})


async def test_a_lago_that_does_not_answer_in_time_is_retried(sqlite_world, lago):
    fake, events = lago
    records = bill(sqlite_world, 3)
    fake.stall_next(1, 3.0, path_prefix="/events")
    clock = Clock()
    delivery = deliverer(sqlite_world, fake, clock, timeout_s=0.5)
    assert await delivery.deliver_due() == 3
    clock.advance(1)
    assert await delivery.deliver_due() == 3
    await delivery.lago.close()
    _, failed, delivered = usage_events(sqlite_world, records[0].id)
    assert failed.status is None and failed.reason.startswith("Lago did not answer POST /events/batch")
    assert type(delivered) is Delivered and held(events) == Counter({str(r.id): 1 for r in records})


def test_an_outage_then_recovery_delivers_everything_exactly_once(sqlite_world, lago):
    fake, events = lago
    delivery = deliverer(sqlite_world, fake, backoff_s=0.2, max_backoff_s=1.0)
    background = LagoBackground(delivery, interval_s=0.1)
    fake.down()
    sqlite_world.runner.start()
    background.start()
    try:
        records = bill(sqlite_world, 250, catch_up=False)
        _wait(lambda: all(usage(sqlite_world, r.id) is not None for r in records[-1:]), 20)
        time.sleep(1.5)  # a few rounds of retries against the closed port
        assert events.stored() == []
        fake.up()
        _wait(lambda: len(events.stored()) == 250, 30)
        _wait(lambda: all(usage(sqlite_world, r.id).status == "delivered" for r in records), 10)
    finally:
        background.stop()
    assert held(events) == Counter({str(r.id): 1 for r in records})
    failures = [e for r in records for e in usage_events(sqlite_world, r.id) if isinstance(e, Failed)]
    assert failures and all(e.status is None and "did not answer" in e.reason for e in failures)


def _wait(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


async def test_two_deliverers_at_once_never_send_the_same_call(world, lago):
    fake, events = lago
    records = bill(world, 150)
    events.answer_late(0.5, count=2)  # both are in flight together
    first, second = deliverer(world, fake), deliverer(world, fake)
    assert sorted(await asyncio.gather(first.deliver_due(), second.deliver_due())) == [50, 100]
    await first.lago.close()
    await second.lago.close()
    sent = [event["transaction_id"] for seen in posts(fake) for event in seen.body["events"]]
    assert sorted(sent) == sorted(str(r.id) for r in records)  # each once: the other's claim held it
    assert all(outcomes(world, r.id) == [Delivered] for r in records)


# -- refusals -----------------------------------------------------------------------------------

def _send_directly(fake: FakeLago, event: dict) -> None:
    """What an earlier delivery did before its outcome could be recorded."""
    answer = httpx.post(f"{fake.url}/api/v1/events", json={"event": event},
                        headers={"Authorization": f"Bearer {fake.api_key}"})
    assert answer.status_code == 200, answer.text


def _config_file(tmp_path, world: World, fake: FakeLago) -> str:
    import yaml

    path = tmp_path / "lago.yaml"
    path.write_text(yaml.safe_dump({
        "general_settings": {"database_url": f"sqlite:///{world.location.sqlite_path}"},
        "moneta_settings": {"lago": {"api_url": fake.url, "api_key": fake.api_key, "billable_metric_code": CODE}}}))
    return str(path)


async def test_a_refused_batch_is_sent_one_by_one_and_the_invalid_event_parked_until_retried(
        sqlite_world, lago, tmp_path, monkeypatch, capsys):
    from moneta.api.cli import main
    from moneta.projections.lago_deliveries import LagoOutbox

    fake, events = lago
    known, gone, fresh = bill(sqlite_world, 1)[0], bill(sqlite_world, 1, subscription="sub_gone")[0], \
        bill(sqlite_world, 1)[0]
    (call,) = LagoOutbox(sqlite_world.store).calls([str(known.id)])
    _send_directly(fake, usage_event(call, CODE))
    delivery = deliverer(sqlite_world, fake)
    assert await drain(delivery) == 3
    await delivery.lago.close()

    (batch,) = posts(fake)
    assert batch.body["events"][0]["transaction_id"] == str(known.id)
    assert [seen.body["event"]["transaction_id"] for seen in posts(fake, "/events")] == \
        [str(known.id), str(known.id), str(gone.id), str(fresh.id)]  # the direct send, then one by one
    assert held(events) == Counter({str(known.id): 1, str(fresh.id): 1})
    _, duplicate = usage_events(sqlite_world, known.id)
    assert (type(duplicate), duplicate.duplicate, duplicate.batch_size) == (Delivered, True, 1)
    _, parked = usage_events(sqlite_world, gone.id)
    assert (type(parked), parked.status, parked.reason) == (Parked, 404, "HTTP 404: subscription_not_found")
    assert outcomes(sqlite_world, fresh.id) == [Delivered]
    assert [row["call"].request_id for row in LagoOutbox(sqlite_world.store).parked()] == [str(gone.id)]
    assert await drain(delivery) == 0  # parked stays parked

    events.add_subscription("sub_gone")  # Lago accepts it now
    monkeypatch.delenv("DATABASE_URL", raising=False)
    main(["lago", "retry-parked", "--config", _config_file(tmp_path, sqlite_world, fake)])
    assert capsys.readouterr().out.split() == [str(gone.id)]
    assert await drain(delivery) == 1
    await delivery.lago.close()
    assert outcomes(sqlite_world, gone.id) == [Parked, Requeued, Delivered]
    requeued, delivered = usage_events(sqlite_world, gone.id)[2:]
    assert (requeued.actor, delivered.attempt) == ("retry-parked", 2)
    assert held(events)[str(gone.id)] == 1 and LagoOutbox(sqlite_world.store).parked() == []


async def test_a_batch_refused_as_a_whole_is_parked_with_lagos_reason(sqlite_world, lago):
    fake, events = lago
    records = bill(sqlite_world, 2)
    fake.fail_next(1, 403, body={"status": 403, "error": "Forbidden", "code": "feature_unavailable"},
                   path_prefix="/events/batch")
    delivery = deliverer(sqlite_world, fake)
    assert await drain(delivery) == 2
    await delivery.lago.close()
    _, parked = usage_events(sqlite_world, records[0].id)
    assert (parked.status, parked.reason) == (403, "HTTP 403: feature_unavailable")
    assert fake.api_key not in parked.reason and events.stored() == []


# -- rebuilds and crashes -------------------------------------------------------------------------

async def test_a_rebuild_of_the_views_sends_nothing_new(world, lago):
    fake, events = lago
    bill(world, 120)
    delivery = deliverer(world, fake)
    assert await drain(delivery) == 120
    sent = len(fake.requests)
    states = b"".join(n.state for n in world.app.recorder.select_notifications(1, 100_000))
    with world.store.transaction() as cur:
        cur.execute("DELETE FROM lago_deliveries")  # the schedule is lost too
    world.runner.rebuild()  # the outbox is filed again, from the same events
    assert await drain(delivery) == 0
    await delivery.lago.close()
    assert len(fake.requests) == sent and len(events.stored()) == 120
    assert b"".join(n.state for n in world.app.recorder.select_notifications(1, 100_000)) == states
    with world.store.reading() as cur:
        settled = cur.execute("SELECT settled, COUNT(*) AS n FROM lago_deliveries GROUP BY settled").all()
    assert settled == [{"settled": "delivered", "n": 120}]  # mirrored from the ledger again


@pytest.mark.postgres
def test_a_kill_9_during_delivery_bills_every_call_exactly_once(postgres_url, lago, tmp_path):
    fake, events = lago
    world = World(postgres_url)
    try:
        records = bill(world, 250, catch_up=False)
        late = bill(world, 1, subscription="sub_later", catch_up=False)[0]  # Lago does not know it yet
    finally:
        world.close()
    events.answer_late(15)  # the first batch is stored, and answered after the kill
    config = {"general_settings": {"master_key": "sk-master-lago", "database_url": postgres_url},
              "moneta_settings": {"lago": {"api_url": fake.url, "api_key": "os.environ/LAGO_API_KEY"}}}
    env = {"LAGO_API_KEY": fake.api_key}
    server = _NotWaitedFor(config, tmp_path, env=env).start()  # its read side sends, ready or not
    try:
        _wait(lambda: len(events.stored()) == 100, 60)
    finally:
        server.kill()
    world = World(postgres_url)
    try:
        assert all(usage(world, r.id) is None for r in records[:100])  # sent, outcome never recorded
        with LiveServer(config, tmp_path, env=env) as restarted:
            _wait(lambda: all(_status(world, r.id) == "delivered" for r in records), 90)
            _wait(lambda: _status(world, late.id) == "parked", 10)
            assert httpx.get(restarted.base_url + "/moneta/lago/parked").status_code == 401  # the admin's only
            parked = httpx.get(restarted.base_url + "/moneta/lago/parked",
                               headers={"Authorization": "Bearer sk-master-lago"}).json()
            assert [(p["request_id"], p["reason"]) for p in parked["parked"]] == \
                [(str(late.id), "HTTP 404: subscription_not_found")]
            events.add_subscription("sub_later")
            retry = subprocess.run([sys.executable, "-m", "moneta.api.cli", "lago", "retry-parked", "--config",
                                    str(restarted.config_path)], capture_output=True, text=True, timeout=60,
                                   env={**os.environ, **env})
            assert retry.returncode == 0 and retry.stdout.split() == [str(late.id)], retry.stderr
            _wait(lambda: _status(world, late.id) == "delivered", 20)
        assert held(events) == Counter({str(r.id): 1 for r in (*records, late)})
        resent = usage_events(world, records[0].id)[1:]
        assert [(type(e), e.duplicate) for e in resent] == [(Delivered, True)]  # Lago had it: billed once
    finally:
        world.close()


class _NotWaitedFor(LiveServer):
    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Returns at once: the test watches what it does instead."""


def _status(world: World, request_id) -> str | None:
    found = usage(world, request_id)
    return None if found is None else found.status
