"""Calls billed through Lago in a real ledger, the fake Lago they go to, and a deliverer between them."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Iterator

import pytest

from moneta.application.config import LagoSettings
from moneta.application.lago_delivery import DeliveryPolicy, LagoDelivery
from moneta.bootstrap import ReadSide
from moneta.domain.lago_usage import LagoUsage, usage_stream_id
from moneta.domain.request_record import RequestRecord
from moneta.infrastructure.aggregate_reader import EventStoreReader
from moneta.infrastructure.lago_events_http import HttpLagoEvents
from moneta.infrastructure.stream_batch_reader import StreamBatchReader
from moneta.projections.lago_deliveries import LagoOutbox
from tests import fake_lago_events
from tests.fake_lago import FakeLago
from tests.ledger_world import World

CODE = "llm_usage"
SUBSCRIPTIONS = ("sub_1", "sub_2")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def lago() -> Iterator[tuple[FakeLago, fake_lago_events.Events]]:
    fake = FakeLago()
    events = fake_lago_events.install(fake)
    events.add_subscription(*SUBSCRIPTIONS)
    fake.start()
    try:
        yield fake, events
    finally:
        fake.stop()


def settings(fake: FakeLago) -> LagoSettings:
    return LagoSettings(api_url=fake.url, api_key=fake.api_key, billable_metric_code=CODE)


def admit(subscription: str | None, customer: str = "cus_1", model: str = "gpt-4o-mini") -> RequestRecord:
    decision = {} if subscription is None else {"entitlement": {"customer": customer, "subscription": subscription}}
    return RequestRecord.admit(uuid.uuid4(), call_type="acompletion", key_hash="h", end_user=customer,
                               model_group=model, stream=False, decision=decision)


def settle(record: RequestRecord, cost: Decimal, *, interrupted: bool = False) -> RequestRecord:
    event = RequestRecord.Interrupted if interrupted else RequestRecord.Completed
    record.trigger_event(event, deployment_id="dep-1", provider="openai", provider_model="gpt-4o-mini-2024-07-18",
                         usage={"prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 0, "reasoning_tokens": 0},
                         cost=cost, price_source="genai-prices", latency_ms=12.5, first_token_ms=None,
                         finish_reason=None if interrupted else "stop", askii=cost * 1000, askii_rate=Decimal(1000))
    return record


def bill(world: World, count: int, *, subscription: str = "sub_1", cost: Decimal = Decimal("0.000123"),
         catch_up: bool = True) -> list[RequestRecord]:
    """`count` calls billed to `subscription`, saved in one commit (admitted and completed)."""
    records = [settle(admit(subscription), cost) for _ in range(count)]
    world.app.save(*records)
    if catch_up:
        world.runner.catch_up()
    return records


def deliverer(world: World, fake: FakeLago, clock: Clock | None = None, **policy: Any) -> LagoDelivery:
    read_side = ReadSide(world.app, world.store, world.runner, 30.0)
    chosen = DeliveryPolicy(**{"timeout_s": 2.0, **policy})
    return LagoDelivery(CODE, LagoOutbox(world.store), StreamBatchReader(world.app), read_side.save_all_unless_moved,
                        HttpLagoEvents(settings(fake), chosen.timeout_s), chosen,
                        clock=clock or (lambda: datetime.now(UTC)), jitter=lambda: 1.0)


async def drain(delivery: LagoDelivery) -> int:
    """Delivery rounds until nothing due is sent; returns how many calls were sent."""
    total = 0
    while sent := await delivery.deliver_due():
        total += sent
    return total


def usage_events(world: World, request_id: Any) -> list[Any]:
    stream = usage_stream_id(str(request_id))
    return [world.app.mapper.to_domain_event(stored) for stored in world.app.recorder.select_events(stream)]


def outcomes(world: World, request_id: Any) -> list[type]:
    return [type(event) for event in usage_events(world, request_id)[1:]]


def usage(world: World, request_id: Any) -> LagoUsage | None:
    return EventStoreReader(world.app).get(usage_stream_id(str(request_id)))
