"""The Lago sync's read side and a worker's billing directory over one test ledger, against the
fake Lago (tests.fake_lago_billing)."""
from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest

from moneta.application.billing_state import BillingDirectory, BillingDirectorySync
from moneta.application.config import LagoSettings
from moneta.application.lago_sync import LagoSync
from moneta.bootstrap import saver
from moneta.domain.request_record import RequestRecord
from moneta.infrastructure.aggregate_reader import EventStoreReader
from moneta.infrastructure.lago_client import LagoBillingClient
from moneta.projections.billing import BillingViewReader
from tests.fake_lago import FakeLago
from tests.fake_lago_billing import Billing, install
from tests.ledger_world import World

API_KEY = "lago-api-key-never-shown-0042"


@pytest.fixture
def lago() -> Iterator[Billing]:
    fake = FakeLago(api_key=API_KEY)
    billing = install(fake)
    fake.start()
    yield billing
    fake.stop()


def lago_settings(lago: Billing, **overrides: Any) -> LagoSettings:
    return LagoSettings(api_url=lago.fake.url, api_key=API_KEY, **overrides)


class Side:
    """The read side's sync and a worker's directory over one ledger."""

    def __init__(self, world: World, settings: LagoSettings) -> None:
        self.world = world
        self.client = LagoBillingClient(settings)
        self.view = BillingViewReader(world.store)
        self.sync = LagoSync(settings, self.client, self.view, EventStoreReader(world.app), saver(world.app))
        self.directory = BillingDirectory(settings.max_staleness_s, settings.on_unreachable)
        self.directory_sync = BillingDirectorySync(self.directory, self.view)

    def call(self, end_user: str = "", **principal: str) -> None:
        """A call the gateway admitted, naming the end user and the key's team and user."""
        record = RequestRecord.admit(uuid.uuid4(), call_type="acompletion", key_hash="h" * 64, end_user=end_user,
                                     model_group="m", stream=False, principal=principal or None)
        self.world.ledger.record_blocking(record, timeout=10)
        self.world.runner.catch_up()

    async def run(self, due: bool = False) -> Any:
        report = await (self.sync.run_due() if due else self.sync.run_once())
        self.refresh()
        return report

    def refresh(self) -> None:
        self.world.runner.catch_up()
        self.directory_sync.load()

    def events(self, stream_id: uuid.UUID) -> list[Any]:
        return list(self.world.app.events.get(stream_id))


def a_customer(lago: Billing, customer_id: str = "acme", credits: str = "80", rate: str = "0.5") -> dict[str, Any]:
    subscription = lago.start_subscription(customer_id, external_id=f"sub-{customer_id}", plan_code="pro")
    lago.set_entitlements(subscription["external_id"], {"llm_access": {"models": "gpt-4o,claude", "max_rpm": 60}})
    return lago.add_wallet(customer_id, credits=credits, rate_amount=rate, synced_at="2026-05-20T12:00:00Z")
