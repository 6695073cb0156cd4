"""Budget alerts: a crossing filed by the budget view reaches the webhooks once, signed, retried
with backoff, and every delivery outcome is an event in the alert's stream."""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from moneta.application.alert_delivery import AlertDelivery
from moneta.application.config import AlertSettings
from moneta.bootstrap import ReadSide, build_read_side
from moneta.domain.budget_alerts import BudgetAlert, alert_stream_id, webhook_label
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.infrastructure.aggregate_reader import EventStoreReader
from moneta.infrastructure.config_loader import ConfigError, parse_config
from moneta.infrastructure.webhook_sender import AiohttpWebhookSender
from moneta.projections.alert_deliveries import AlertDeliveries
from tests.ledger_world import World
from tests.webhook_receiver import WebhookReceiver

SECRET = "whsec-test-0123456789abcdef"
SOFT = "key:abc|2026-05|soft_budget"
SCOPE = {"scope": "key:abc", "period": "2026-05", "limit": "10.00", "soft": "8.00", "spent": "0", "reserved": "0.5",
         "resets_at": "2026-06-01T00:00:00+00:00"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def cross(world: World, cost: str = "8.5") -> RequestRecord:
    """A call admitted on the budget whose cost takes its spend past the soft limit."""
    record = RequestRecord.admit(uuid.uuid4(), call_type="acompletion", key_hash="h", end_user="", model_group="m",
                                 stream=False, decision={"budget": {"scopes": [SCOPE]}})
    record.complete(deployment_id="d", provider="openai", provider_model="m", usage=Usage(10, 5), cost=Decimal(cost),
                    price_source="config", latency_ms=1.0)
    world.ledger.record_blocking(record, timeout=10)
    world.runner.catch_up()
    return record


def delivery(world: World, urls: list[str], clock: Clock, **settings) -> AlertDelivery:
    read_side = ReadSide(world.app, world.store, world.runner, 30.0)
    return AlertDelivery(AlertSettings(webhook_urls=tuple(urls), webhook_secret=SECRET, **settings),
                         AlertDeliveries(world.store), EventStoreReader(world.app), read_side.save_unless_moved,
                         AiohttpWebhookSender(), clock=clock, jitter=lambda: 1.0)


def events(world: World, alert_id: str = SOFT) -> list:
    return [world.app.mapper.to_domain_event(stored)
            for stored in world.app.recorder.select_events(alert_stream_id(alert_id))]


def stored_states(world: World) -> bytes:
    return b"".join(n.state for n in world.app.recorder.select_notifications(1, 10_000))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/gone"


@pytest.fixture
async def receiver():
    receiver = await WebhookReceiver().start()
    yield receiver
    await receiver.stop()


async def test_an_alert_reaches_the_webhook_once_signed(world, receiver):
    cross(world)
    clock = Clock()
    deliverer = delivery(world, [receiver.url], clock)
    for _ in range(3):
        await deliverer.deliver_due()
        clock.advance(3600)
    await deliverer.sender.close()

    (request,) = receiver.received
    timestamp = request.headers["X-Moneta-Timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Moneta-Signature"], f"sha256={expected}")
    assert request.headers["Idempotency-Key"] == SOFT
    body = json.loads(request.body)
    assert body["text"].startswith("Budget alert: key:abc crossed its soft budget of $8.00")
    assert {k: body[k] for k in ("scope", "period", "kind", "threshold", "spend", "limit", "resets_at")} == {
        "scope": "key:abc", "period": "2026-05", "kind": "soft_budget", "threshold": "8.00", "spend": "8.5",
        "limit": "10.00", "resets_at": "2026-06-01T00:00:00+00:00"}

    raised, delivered = events(world)
    assert isinstance(raised, BudgetAlert.Raised) and raised.spend == Decimal("8.5")
    assert isinstance(delivered, BudgetAlert.Delivered)
    assert (delivered.webhook, delivered.attempt, delivered.status) == (webhook_label(receiver.url), 1, 200)
    assert "s3cr3tpathtoken" not in delivered.webhook
    states = stored_states(world)
    assert SECRET.encode() not in states and b"s3cr3tpathtoken" not in states


async def test_a_failing_webhook_is_retried_with_backoff_then_delivered(world, receiver):
    receiver.fail_first = 2
    cross(world)
    clock = Clock()
    deliverer = delivery(world, [receiver.url], clock, backoff_s=10.0)
    assert await deliverer.deliver_due() == 1  # 503
    assert await deliverer.deliver_due() == 0  # not before its retry is due
    clock.advance(10)
    assert await deliverer.deliver_due() == 1  # 503 again: the next wait doubles
    clock.advance(19)
    assert await deliverer.deliver_due() == 0
    clock.advance(1)
    assert await deliverer.deliver_due() == 1
    await deliverer.sender.close()

    assert len(receiver.received) == 3
    assert len({r.headers["Idempotency-Key"] for r in receiver.received}) == 1
    _, first, second, delivered = events(world)
    assert (first.attempt, first.status, first.error) == (1, 503, "HTTP 503")
    assert second.retry_at - first.retry_at == timedelta(seconds=20)
    assert (delivered.__class__, delivered.attempt) == (BudgetAlert.Delivered, 3)


async def test_a_webhook_down_for_good_ends_in_gave_up(world):
    cross(world)
    clock, url = Clock(), closed_port_url()
    deliverer = delivery(world, [url], clock, max_attempts=3, backoff_s=1.0)
    for _ in range(6):
        await deliverer.deliver_due()
        clock.advance(60)
    await deliverer.sender.close()

    *failures, gave_up = events(world)[1:]
    assert [type(e) for e in failures] == [BudgetAlert.DeliveryFailed] * 3
    assert all(e.status is None and e.error.startswith("cannot connect") for e in failures)
    assert failures[-1].retry_at is None
    assert isinstance(gave_up, BudgetAlert.GaveUp) and gave_up.attempts == 3
    assert b"/hooks/gone" not in stored_states(world)


async def test_an_answer_retrying_cannot_change_is_not_retried(world, receiver):
    receiver.fail_first, receiver.fail_status = 1, 404
    cross(world)
    deliverer = delivery(world, [receiver.url], Clock())
    await deliverer.deliver_due()
    await deliverer.sender.close()
    failed, gave_up = events(world)[1:]
    assert failed.status == 404 and gave_up.reason == "HTTP 404 is not retried"
    assert AlertDeliveries(world.store).due(webhook_label(receiver.url), Clock()() + timedelta(days=1), 10) == []


async def test_a_rebuild_of_the_views_sends_nothing_again(world, receiver):
    cross(world)
    clock = Clock()
    deliverer = delivery(world, [receiver.url], clock)
    await deliverer.deliver_due()
    world.runner.rebuild()  # the outbox is filed again, from the same events
    with world.store.transaction() as cur:
        cur.execute("DELETE FROM budget_alert_deliveries")  # and the schedule is lost
    assert await deliverer.deliver_due() == 0
    await deliverer.sender.close()
    assert len(receiver.received) == 1
    assert len(events(world)) == 2


async def test_each_webhook_and_each_crossing_gets_its_own_delivery(world, receiver):
    other = await WebhookReceiver(path="/other").start()
    cross(world, cost="10.5")  # past the soft limit and the limit in one call
    deliverer = delivery(world, [receiver.url, other.url], Clock())
    assert await deliverer.deliver_due() == 4
    await deliverer.sender.close()
    await other.stop()
    keys = sorted(r.headers["Idempotency-Key"] for r in receiver.received)
    assert keys == sorted(r.headers["Idempotency-Key"] for r in other.received)
    assert keys == ["key:abc|2026-05|max_budget", SOFT]


def test_the_read_side_delivers_alerts_in_the_background(sqlite_url, tmp_path):
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    receiver = WebhookReceiver()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(10)
    config = parse_config({"general_settings": {
        "database_url": sqlite_url, "alerting": ["webhook"], "alerting_webhook_url": receiver.url,
        "alerting_webhook_secret": "os.environ/HOOK_SECRET"}}, {"HOOK_SECRET": SECRET})
    world = World(sqlite_url)
    read_side = build_read_side(config)
    received: list[bytes] = []
    try:
        read_side.runner.start()
        read_side.alerts.start()
        cross(world)
        deadline = time.monotonic() + 20
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        received = [r.body for r in receiver.received]
    finally:
        read_side.close()
        world.close()
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    assert len(received) == 1 and json.loads(received[0])["kind"] == "soft_budget"


# -- the config -------------------------------------------------------------------------------

def _alerting(**general) -> dict:
    return {"general_settings": {"alerting": ["webhook"], "alerting_webhook_url": "https://hooks.example.com/T/B/x",
                                 "alerting_webhook_secret": "os.environ/HOOK_SECRET", **general}}


def test_webhook_alerting_is_read_with_its_args_and_its_secrets_are_known():
    config = parse_config(_alerting(alerting=["webhook", "email"], alerting_args={
        "webhook_max_attempts": 3, "webhook_timeout_s": 2, "daily_report_frequency": 43200}), {"HOOK_SECRET": SECRET})
    assert config.alerting == AlertSettings(webhook_urls=("https://hooks.example.com/T/B/x",), webhook_secret=SECRET,
                                            timeout_s=2.0, max_attempts=3)
    assert SECRET in config.secrets() and "https://hooks.example.com/T/B/x" in config.secrets()
    assert SECRET not in repr(config) and "alerting_webhook_secret" not in config.general_settings
    assert config.notices[0] == ("config keys accepted, not supported (they have no effect): "
                                 "general_settings.alerting[email], general_settings.alerting_args.daily_report_frequency")


def test_alerting_without_webhook_delivers_nothing():
    assert parse_config({"general_settings": {"alerting": ["slack"]}}, {}).alerting is None


@pytest.mark.parametrize(("general", "named"), [
    ({"alerting": "webhook"}, "general_settings.alerting must be a list"),
    ({"alerting_webhook_url": None}, "general_settings.alerting_webhook_url is required"),
    ({"alerting_webhook_url": ["ftp://x/y"]}, "general_settings.alerting_webhook_url must be http(s) URLs"),
    ({"alerting_webhook_secret": ""}, "general_settings.alerting_webhook_secret is required"),
    ({"alerting_args": {"webhook_max_attempts": 0}}, "general_settings.alerting_args.webhook_max_attempts"),
    ({"alerting_args": {"webhook_timeout_s": "soon"}}, "general_settings.alerting_args.webhook_timeout_s"),
])
def test_invalid_alerting_settings_name_the_key(general, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")) as raised:
        parse_config(_alerting(**general), {"HOOK_SECRET": SECRET})
    assert len(str(raised.value).splitlines()) == 1 and SECRET not in str(raised.value)
