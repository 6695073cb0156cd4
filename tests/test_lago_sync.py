"""The Lago sync: what Lago says of each customer the gateway has seen is read over the wire (from
the fake Lago), recorded as events when it changed, and shown by the billing view and the workers'
in-memory directory; outages are recorded and make the state stale."""
from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from moneta.domain.billing import (
    LagoCustomer, LagoSyncLog, LagoWebhook, customer_stream_id, sync_stream_id, webhook_subject,
)
from moneta.infrastructure.event_store import StoreLocation
from moneta.infrastructure.lago_sync_schedule import BackgroundLagoSync
from moneta.projections import billing as billing_view
from tests.fake_lago_billing import Billing
from tests.lago_side import API_KEY, Side, a_customer, lago, lago_settings  # noqa: F401 (lago: a fixture)
from tests.ledger_world import World
from tests.live_server import LiveServer
from tests.test_projection_pages import Counted


@pytest.fixture
async def side(world: World, lago: Billing) -> Any:
    side = Side(world, lago_settings(lago))
    yield side
    await side.client.close()


async def test_a_sync_records_subscription_entitlements_and_wallet_and_the_directory_shows_them(side, lago):
    a_customer(lago)
    side.call(end_user="acme")

    report = await side.run()

    assert (report.failure, report.customers, report.changed) == (None, 1, 1)
    events = side.events(customer_stream_id("acme"))
    assert [type(e) for e in events] == [LagoCustomer.Tracked, LagoCustomer.SubscriptionChanged,
                                         LagoCustomer.EntitlementsChanged, LagoCustomer.WalletChanged]
    assert all(e.source == "sync" for e in events)
    assert events[1].subscription["external_id"] == "sub-acme" and events[1].subscription["plan_code"] == "pro"
    assert events[2].features == {"llm_access": {"models": "gpt-4o,claude", "max_rpm": 60}}
    wallet = events[3].wallet
    assert wallet["balance_usd"] == Decimal("40.0") and isinstance(wallet["rate_amount"], Decimal)
    assert wallet["computed_at"] == datetime(2026, 5, 20, 12, 0, tzinfo=UTC) and wallet["depleted"] is False

    billing = side.directory.customer("acme")
    assert billing is not None
    assert (billing.subscription_id, billing.plan_code, billing.subscription_status) == ("sub-acme", "pro", "active")
    assert billing.features["llm_access"]["models"] == "gpt-4o,claude"
    assert billing.wallet is not None and billing.wallet.balance_usd == Decimal("40.0")
    assert billing.wallet.currency == "USD" and not billing.wallet.depleted
    assert billing.wallet.computed_at == datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
    assert report.started_at <= billing.synced_at <= report.at  # when this customer was read
    assert side.directory.last_sync_at == report.started_at and not side.directory.stale()
    sync_log = side.events(sync_stream_id(report.at.date()))
    (succeeded,) = [e for e in sync_log if isinstance(e, LagoSyncLog.SyncSucceeded)]
    assert (succeeded.scope, succeeded.customers, succeeded.changed, succeeded.skipped) == ("all", 1, 1, [])


async def test_a_second_sync_with_nothing_changed_appends_nothing_to_the_customer(side, lago):
    wallet = a_customer(lago)
    side.call(end_user="acme")
    await side.run()
    before = len(side.events(customer_stream_id("acme")))
    version = side.directory.version
    # Lago's clock job recomputed the same balance: no news (the calls since the first time still count)
    lago.set_wallet_balance(wallet["lago_id"], wallet["credits_ongoing_balance"], synced_at="2026-05-20T12:05:00Z")

    report = await side.run()

    assert (report.customers, report.changed) == (1, 0)
    assert len(side.events(customer_stream_id("acme"))) == before
    assert side.directory.last_sync_at == report.started_at and side.directory.version > version
    assert side.directory.customer("acme").synced_at == report.started_at
    assert side.directory.customer("acme").wallet.computed_at == datetime(2026, 5, 20, 12, 0, tzinfo=UTC)


async def test_a_change_in_lago_shows_after_one_sync(side, lago):
    wallet = a_customer(lago)
    side.call(end_user="acme")
    await side.run()

    lago.set_wallet_balance(wallet["lago_id"], "0", synced_at="2026-05-20T12:05:00Z")
    lago.set_entitlements("sub-acme", {"llm_access": {"models": "gpt-4o"}})
    report = await side.run()

    assert report.changed == 1
    billing = side.directory.customer("acme")
    assert billing.wallet.balance_usd == 0 and billing.wallet.depleted
    assert dict(billing.features["llm_access"]) == {"models": "gpt-4o"}

    lago.terminate_subscription("sub-acme")
    await side.run()
    billing = side.directory.customer("acme")
    assert billing.subscription_id is None and billing.subscription_status is None and dict(billing.features) == {}
    changes = [e for e in side.events(customer_stream_id("acme")) if isinstance(e, LagoCustomer.SubscriptionChanged)]
    assert changes[-1].subscription is None


async def test_whom_the_sync_reads_follows_customer_id_from(world, lago):
    a_customer(lago, "team-blue")
    side = Side(world, lago_settings(lago, customer_id_from="team"))
    try:
        side.call(end_user="someone", team_id="team-blue", user_id="u-7")
        report = await side.run()
    finally:
        await side.client.close()
    assert report.customers == 1 and side.directory.customer("team-blue") is not None
    assert side.directory.customer("someone") is None


async def test_lists_are_followed_across_pages_and_only_a_usable_wallet_counts(side, lago):
    lago.max_per_page = 1
    lago.start_subscription("acme", external_id="sub-late", started_at="2026-03-01T00:00:00Z")
    lago.start_subscription("acme", external_id="sub-first", started_at="2026-01-01T00:00:00Z")
    lago.add_wallet("acme", credits="999", currency="EUR")
    lago.add_wallet("acme", credits="500", applies_to={"billable_metric_codes": ["storage"]})
    paying = lago.add_wallet("acme", credits="12.5", priority=10)
    lago.terminate_wallet(lago.add_wallet("acme", credits="700", priority=1)["lago_id"])
    side.call(end_user="acme")

    await side.run()

    billing = side.directory.customer("acme")
    assert billing.subscription_id == "sub-first"
    assert billing.wallet.wallet_id == paying["lago_id"] and billing.wallet.balance_usd == Decimal("12.5")
    pages = [r.query.get("page") for r in lago.fake.requests if r.path == "/wallets"]
    assert pages == ["1", "2", "3", "4"]


async def test_a_customer_lago_does_not_know_is_synced_as_having_nothing(side, lago):
    side.call(end_user="stranger")
    report = await side.run()
    assert (report.failure, report.customers) == (None, 1)
    billing = side.directory.customer("stranger")
    assert billing.subscription_id is None and billing.wallet is None and dict(billing.features) == {}


async def test_a_customer_lago_refuses_is_skipped_and_the_round_still_succeeds(side, lago):
    a_customer(lago, "acme")
    a_customer(lago, "bad")
    side.call(end_user="acme")
    side.call(end_user="bad")
    await side.run()
    lago.fake.fail_next(1, 422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors"},
                        path_prefix="/subscriptions/sub-bad")

    report = await side.run()

    assert report.failure is None and report.skipped == ["bad"] and report.customers == 1
    assert side.directory.customer("acme").synced_at == report.started_at
    assert side.directory.customer("acme").wallet.computed_at == datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
    assert side.directory.customer("bad").synced_at < report.started_at  # not confirmed by this round


async def test_lago_down_is_recorded_then_stale_then_recovered(world, lago, caplog):
    caplog.set_level(logging.DEBUG)
    a_customer(lago)
    side = Side(world, lago_settings(lago, max_staleness_s=30))
    try:
        side.call(end_user="acme")
        good = await side.run()
        lago.fake.down()
        failed = await side.run()
        lago.fake.up()
        assert failed.failure is not None and "Lago did not answer" in failed.failure
        side.refresh()

        assert side.directory.last_sync_at == good.started_at
        assert not side.directory.stale(good.started_at + timedelta(seconds=29))
        assert side.directory.stale(good.started_at + timedelta(seconds=31))
        status = side.view.sync_status()
        assert status["last_failure_reason"] == failed.failure and status["last_failure_scope"] == "all"
        assert side.directory.customer("acme").wallet is not None  # what was known is kept

        recovered = await side.run()
    finally:
        await side.client.close()
    assert recovered.failure is None
    assert side.directory.last_sync_at == recovered.started_at
    assert not side.directory.stale(recovered.started_at + timedelta(seconds=29))
    log_sync = side.events(sync_stream_id(recovered.at.date()))
    assert [type(e).__name__ for e in log_sync[1:]] == ["SyncSucceeded", "SyncFailed", "SyncSucceeded"]
    assert API_KEY.encode() not in b"".join(n.state for n in world.app.recorder.select_notifications(1, 10_000))
    assert API_KEY not in caplog.text


async def test_rate_limits_and_server_errors_fail_the_round_and_keep_what_was_read(side, lago):
    a_customer(lago, "acme")
    side.call(end_user="acme")
    lago.fake.fail_next(3, 503)
    report = await side.run()
    assert report.failure is not None and "503" in report.failure
    assert side.view.sync_status()["last_failure_reason"] == report.failure
    assert side.directory.last_sync_at is None and side.directory.stale()


async def test_a_new_customer_and_a_webhook_refresh_are_read_by_the_due_round(side, lago):
    a_customer(lago, "acme")
    assert await side.run(due=True) is None  # nobody seen yet: nothing read, nothing recorded
    side.call(end_user="acme")

    report = await side.run(due=True)

    assert (report.scope, report.refreshed, report.customers) == ("due", ["acme"], 1)
    assert side.directory.customer("acme").wallet is not None
    assert await side.run(due=True) is None  # read: no longer due


async def test_a_customer_seen_in_a_call_is_synced_within_seconds_by_the_scheduled_sync(world, lago):
    a_customer(lago, "fresh")
    side = Side(world, lago_settings(lago, sync_interval_s=3600))
    background = BackgroundLagoSync(side.sync, interval_s=3600)
    background.start()
    try:
        deadline = time.monotonic() + 10
        while side.view.sync_status() is None and time.monotonic() < deadline:  # the round at start
            side.refresh()
            time.sleep(0.05)
        side.call(end_user="fresh")
        seen_at = time.monotonic()
        while side.directory.customer("fresh") is None and time.monotonic() < deadline:
            side.refresh()
            time.sleep(0.05)
    finally:
        background.stop()
    assert side.directory.customer("fresh") is not None, "the new customer was not synced"
    assert time.monotonic() - seen_at < 5


def test_a_served_gateway_syncs_a_new_end_user_and_takes_lago_webhooks(tmp_path: Path, lago: Billing):
    """End to end: the read side of `moneta serve` reads a new end user from Lago within seconds of
    its first call, a worker applies a signed webhook, and readiness reports the sync."""
    wallet = a_customer(lago, "live-user", credits="10", rate="1")
    config = {"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"}}],
              "moneta_settings": {"lago": {"api_url": lago.fake.url, "api_key": "os.environ/LAGO_KEY",
                                           "webhook_hmac_key": "os.environ/LAGO_HMAC", "sync_interval_s": 3600}}}
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = {"DATABASE_URL": url, "LAGO_KEY": API_KEY, "LAGO_HMAC": lago.hmac_key}
    with LiveServer(config, tmp_path, env=env) as server:
        chat = {"model": "m", "user": "live-user", "messages": [{"role": "user", "content": "hi"}]}
        first = httpx.post(server.base_url + "/v1/chat/completions", json=chat, timeout=30)
        # never seen before, so not known to be entitled yet: refused, and read from Lago at once
        assert first.status_code == 403 and first.json()["error"]["code"] == "entitlement_denied"
        synced = _wait_for_stream(StoreLocation.from_url(url), customer_stream_id("live-user"), events=4)
        lago.set_wallet_balance(wallet["lago_id"], "0")
        body, headers = lago.signed_webhook(lago.webhook("wallet.depleted_ongoing_balance", "wallet", wallet))
        answer = httpx.post(server.base_url + "/lago/webhooks", content=body, headers=headers)
        applied = _wait_for_stream(StoreLocation.from_url(url), customer_stream_id("live-user"), events=5)
        readiness = _wait_for_lago_sync(server)
        deadline = time.monotonic() + 10  # the worker's directory follows the view within a second
        while (admitted := httpx.post(server.base_url + "/v1/chat/completions", json=chat, timeout=30)).status_code \
                == 403 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert [type(e).__name__ for e in synced] == ["Tracked", "SubscriptionChanged", "EntitlementsChanged",
                                                  "WalletChanged"]
    assert synced[3].wallet["balance_usd"] == 10
    assert answer.status_code == 200 and answer.json()["duplicate"] is False
    assert isinstance(applied[4], LagoCustomer.WalletChanged) and applied[4].wallet["depleted"] is True
    assert applied[4].source == "webhook:wallet.depleted_ongoing_balance"
    assert readiness["lago"]["stale"] is False and readiness["lago"]["on_unreachable"] == "deny"
    assert admitted.status_code == 429, admitted.text  # entitled once read, but its wallet ran dry
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file() and path.suffix != ".yaml")
    assert API_KEY.encode() not in stored and lago.hmac_key.encode() not in stored
    assert b"live-user" in stored  # the scan saw the ledger and the log


def _wait_for_stream(location: StoreLocation, stream_id: uuid.UUID, events: int, timeout: float = 15.0) -> list[Any]:
    """The stream once it holds `events` events (what it holds at the deadline otherwise)."""
    app = location.open()
    try:
        deadline = time.monotonic() + timeout
        while True:
            found = list(app.events.get(stream_id))
            if len(found) >= events or time.monotonic() > deadline:
                return found
            time.sleep(0.1)
    finally:
        app.close()


def _wait_for_lago_sync(server: LiveServer, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(server.base_url + "/health/readiness").json()
        if body.get("lago", {}).get("last_sync_at") or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


# -- the billing view ------------------------------------------------------------------------------


def billing_tables(world: World) -> dict[str, list[dict[str, Any]]]:
    """The view's rows, but the revisions (which count pages)."""
    with world.store.reading() as cur:
        tables = {table: cur.execute(f"SELECT * FROM {table} ORDER BY {key}").all()
                  for table, key in (("billing_seen", "kind, id"), ("lago_customers", "customer_id"),
                                     ("lago_sync_status", "name"))}
    for row in tables["lago_customers"]:
        row.pop("revision")
    return tables


async def test_the_billing_view_is_the_same_whatever_the_pages_and_a_page_costs_a_few_statements(world, lago):
    side = Side(world, lago_settings(lago))
    try:
        wallets = [a_customer(lago, f"c{n}") for n in range(12)]
        for n in range(12):
            side.call(end_user=f"c{n}", team_id=f"t{n % 3}", user_id=f"u{n % 5}")
        await side.run()
        for wallet in wallets[::2]:
            lago.set_wallet_balance(wallet["lago_id"], "3", synced_at="2026-05-21T00:00:00Z")
        lago.terminate_subscription("sub-c1")
        await side.run()
        received = LagoWebhook.receive("hook-1", webhook_subject(lago.webhook(
            "wallet_transaction.created", "wallet_transaction", lago.transaction(wallets[3]["lago_id"], "9"))),
            algorithm="hmac", customers=[], at=datetime.now(UTC))
        world.app.save(received)
        side.refresh()
        assert (await side.run(due=True)).refreshed == ["c3"]
    finally:
        await side.client.close()

    counted = Counted(billing_view)
    one_page = world.new_runner(world.store, name="billing-counted", views=[counted], page_size=10_000)
    one_page.create_tables()
    one_page.rebuild()
    assert max(counted.statements) <= 7 and len(counted.statements) == 1
    in_one_page = billing_tables(world)
    one_by_one = world.new_runner(world.store, name="billing-one-by-one", views=[billing_view], page_size=1)
    one_by_one.create_tables()
    one_by_one.rebuild()
    assert billing_tables(world) == in_one_page
    assert len(in_one_page["lago_customers"]) == 12 and len(in_one_page["billing_seen"]) == 12 + 3 + 5 + 1
    refreshed = {row["customer_id"]: row for row in in_one_page["lago_customers"]}["c3"]
    assert refreshed["refresh_wanted_at"] is not None
