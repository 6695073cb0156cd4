"""Lago's webhooks at `POST /lago/webhooks` (the app in process, over httpx's ASGI transport; Lago
and its signing keys are the fake's): a good HMAC or JWT signature is applied and recorded once, a
bad one is a 401 that records nothing, and each applied type changes the state the entitlement
check reads."""
from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Iterator

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient

from moneta.api.app import create_app
from moneta.application.billing_state import BillingDirectorySync
from moneta.bootstrap import Container, build
from moneta.domain.billing import LagoCustomer, LagoWebhook, customer_stream_id, webhook_stream_id
from moneta.infrastructure.config_loader import parse_config
from moneta.projections.billing import BillingViewReader
from moneta.projections.budgets import BudgetViewReader
from moneta.projections import tracking
from moneta.projections.queries import SpendQueries
from moneta.projections.runner import DEFAULT_NAME
from tests.fake_lago_billing import Billing, new_rsa_key
from tests.lago_side import API_KEY, Side, a_customer, lago  # noqa: F401 (lago: a fixture)
from tests.ledger_world import World


class Gateway:
    """A gateway worker's app over the test ledger, and the read side's sync beside it."""

    def __init__(self, world: World, lago: Billing, **lago_config: Any) -> None:
        self.world = world
        self.lago = lago
        config = {"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"}}],
                  "general_settings": {"database_url": f"sqlite:///{world.location.sqlite_path}"},
                  "moneta_settings": {"lago": {"api_url": lago.fake.url, "api_key": API_KEY,
                                               "webhook_hmac_key": lago.hmac_key, **lago_config}}}
        self.container: Container = build(parse_config(config, {}), {})
        self.container.follow_lago(BillingViewReader(world.store),
                                   BudgetViewReader(world.store, world.last_position, world.runner.name))
        self.side = Side(world, self.container.config.moneta.lago)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(self.container)),
                                      base_url="http://gateway")

    async def post(self, payload: dict[str, Any], algorithm: str = "hmac", **signing: Any) -> httpx.Response:
        body, headers = self.lago.signed_webhook(payload, algorithm, **signing)
        return await self.http.post("/lago/webhooks", content=body, headers=headers)

    def refresh(self) -> None:
        """The read side catches up and the worker's directory reads what changed."""
        self.world.runner.catch_up()
        next(b for b in self.container.background if isinstance(b, BillingDirectorySync)).load()

    def customer(self, customer_id: str = "acme") -> Any:
        self.refresh()
        return self.container.billing.customer(customer_id)

    def events(self, stream_id: uuid.UUID) -> list[Any]:
        return list(self.world.app.events.get(stream_id))

    def position(self) -> int:
        return self.world.last_position()

    async def close(self) -> None:
        await self.http.aclose()
        await self.side.client.close()
        for task in self.container.background:
            await task.stop()
        self.container.close()


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    world = World(sqlite_url)
    yield world
    world.close()


@pytest.fixture
async def gateway(world: World, lago: Billing) -> Any:
    gateway = Gateway(world, lago)
    yield gateway
    await gateway.close()


async def synced(gateway: Gateway, customer_id: str = "acme", **wallet: str) -> dict[str, Any]:
    """The customer as the sync read it from Lago; returns its wallet."""
    found = a_customer(gateway.lago, customer_id, **wallet)
    gateway.side.call(end_user=customer_id)
    await gateway.side.run()
    gateway.refresh()
    return found


async def test_a_good_hmac_signature_is_applied_and_recorded_with_the_change(gateway, lago):
    wallet = await synced(gateway)
    lago.set_wallet_balance(wallet["lago_id"], "0", synced_at="2026-05-20T12:30:00Z")

    response = await gateway.post(lago.webhook("wallet.depleted_ongoing_balance", "wallet", wallet),
                                  unique_key="key-1")

    assert response.status_code == 200 and response.json() == {
        "received": True, "duplicate": False, "webhook_type": "wallet.depleted_ongoing_balance"}
    (received,) = gateway.events(webhook_stream_id("key-1"))
    assert isinstance(received, LagoWebhook.Received)
    assert (received.webhook_type, received.object_type, received.customer_id, received.object_id,
            received.algorithm, received.customers) == (
        "wallet.depleted_ongoing_balance", "wallet", "acme", wallet["lago_id"], "hmac", ["acme"])
    change = gateway.events(customer_stream_id("acme"))[-1]
    assert isinstance(change, LagoCustomer.WalletChanged) and change.source == "webhook:wallet.depleted_ongoing_balance"
    billing = gateway.customer()
    assert billing.wallet.depleted and billing.wallet.balance_usd == 0


async def test_a_good_jwt_signature_is_applied(gateway, lago):
    await synced(gateway)
    subscription = lago.terminate_subscription("sub-acme")

    response = await gateway.post(lago.webhook("subscription.terminated", "subscription", subscription), "jwt")

    assert response.status_code == 200
    billing = gateway.customer()
    assert billing.subscription_id is None and billing.subscription_status is None
    (fetch,) = [r for r in lago.fake.requests if r.path == "/webhooks/json_public_key"]
    assert fetch.headers["Authorization"] == f"Bearer {API_KEY}"
    await gateway.post(lago.webhook("subscription.terminated", "subscription", subscription), "jwt")
    assert len([r for r in lago.fake.requests if r.path == "/webhooks/json_public_key"]) == 1  # the key is kept


def forged(lago: Billing, payload: dict[str, Any]) -> list[tuple[bytes, dict[str, str]]]:
    """Webhooks that are not Lago's: each is refused."""
    good_body, good_headers = lago.signed_webhook(payload)
    jwt_body, jwt_headers = lago.signed_webhook(payload, "jwt")
    other_key = jwt.encode({"data": jwt_body.decode(), "iss": lago.fake.url}, new_rsa_key(), algorithm="RS256")
    no_signature = {k: v for k, v in good_headers.items() if k != "X-Lago-Signature"}
    return [
        lago.signed_webhook(payload, hmac_key="not-the-organization-key"),
        (good_body.replace(b'"acme"', b'"evil"'), good_headers),  # the body changed after signing
        (good_body, no_signature),
        (jwt_body, {**jwt_headers, "X-Lago-Signature": other_key}),
        (jwt_body.replace(b'"acme"', b'"evil"'), jwt_headers),  # the JWT's data is not this body
        (jwt_body, {**jwt_headers, "X-Lago-Signature": "not.a.jwt"}),
        (jwt_body, {**jwt_headers, "X-Lago-Signature": jwt.encode({"data": jwt_body.decode()}, "s" * 32, "HS256")}),
    ]


async def test_a_bad_or_missing_signature_is_a_401_and_records_nothing(gateway, lago):
    wallet = await synced(gateway)
    payload = lago.webhook("wallet.depleted_ongoing_balance", "wallet", wallet)
    before = gateway.position()

    for body, headers in forged(lago, payload):
        response = await gateway.http.post("/lago/webhooks", content=body, headers=headers)
        assert response.status_code == 401, body[:80]
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.json()["error"]["code"] == "invalid_signature"

    assert gateway.position() == before
    assert not gateway.customer().wallet.depleted


async def test_a_webhook_sent_again_is_recorded_once(gateway, lago):
    wallet = await synced(gateway)
    payload = lago.webhook("wallet_transaction.created", "wallet_transaction", lago.transaction(wallet["lago_id"], "5"))
    body, headers = lago.signed_webhook(payload)
    first = await gateway.http.post("/lago/webhooks", content=body, headers=headers)
    after_first = gateway.position()

    again = await gateway.http.post("/lago/webhooks", content=body, headers=headers)

    assert first.json()["duplicate"] is False and again.status_code == 200 and again.json()["duplicate"] is True
    assert gateway.position() == after_first
    assert len([e for e in gateway.events(customer_stream_id("acme"))
                if isinstance(e, LagoCustomer.WalletTransactionReported)]) == 1


async def test_a_wallet_transaction_is_recorded_with_its_amounts_then_the_wallet_read_again(gateway, lago):
    wallet = await synced(gateway, credits="80", rate="0.5")
    lago.set_wallet_balance(wallet["lago_id"], "120", synced_at="2026-05-20T13:00:00Z")  # 40 credits bought
    transaction = lago.transaction(wallet["lago_id"], "40")
    transaction.pop("wallet", None)
    payload = lago.webhook("wallet_transaction.created", "wallet_transaction", transaction)
    del payload["wallet_transaction"]["wallet"]  # without its wallet: the customer is found by the wallet's id

    assert (await gateway.post(payload)).status_code == 200

    reported = gateway.events(customer_stream_id("acme"))[-1]
    assert isinstance(reported, LagoCustomer.WalletTransactionReported)
    assert reported.transaction["amount"] == Decimal("20.0") and reported.transaction["credit_amount"] == Decimal("40")
    assert reported.transaction["transaction_type"] == "inbound"
    assert gateway.customer().wallet.balance_usd == Decimal("40.0")  # the webhook does not carry the new balance
    report = await gateway.side.run(due=True)
    assert report.refreshed == ["acme"]
    assert gateway.customer().wallet.balance_usd == Decimal("60.0")
    assert await gateway.side.run(due=True) is None


async def test_a_subscription_started_applies_and_its_entitlements_are_read_next(gateway, lago):
    await synced(gateway)
    lago.terminate_subscription("sub-acme")
    await gateway.side.run()
    assert gateway.customer().subscription_id is None
    started = lago.start_subscription("acme", external_id="sub-acme-2", plan_code="team")
    lago.set_entitlements("sub-acme-2", {"llm_access": {"models": "gpt-4o-mini"}})

    assert (await gateway.post(lago.webhook("subscription.started", "subscription", started))).status_code == 200

    billing = gateway.customer()
    assert (billing.subscription_id, billing.plan_code, billing.subscription_status) == ("sub-acme-2", "team", "active")
    await gateway.side.run(due=True)
    assert dict(gateway.customer().features["llm_access"]) == {"models": "gpt-4o-mini"}


async def test_features_updated_and_deleted_change_every_subscription_holding_them(gateway, lago):
    await synced(gateway, "acme")
    await synced(gateway, "globex")
    feature = {"code": "llm_access", "name": "LLM access", "description": None, "created_at": "2026-01-01T00:00:00Z",
               "privileges": [{"code": "models", "name": "Models", "value_type": "string", "config": {}}]}

    response = await gateway.post(lago.webhook("feature.updated", "feature", feature))

    assert response.status_code == 200
    (received,) = [e for e in gateway.events(webhook_stream_id(response.request.headers["X-Lago-Unique-Key"]))]
    assert received.customers == ["acme", "globex"]
    for customer in ("acme", "globex"):
        assert dict(gateway.customer(customer).features["llm_access"]) == {"models": "gpt-4o,claude"}  # max_rpm gone

    created = await gateway.post(lago.webhook("feature.created", "feature", {**feature, "code": "new_feature"}))
    assert created.status_code == 200  # no subscription holds a new feature yet
    assert gateway.events(customer_stream_id("acme"))[-1].source == "webhook:feature.updated"

    assert (await gateway.post(lago.webhook("feature.deleted", "feature", feature))).status_code == 200
    assert dict(gateway.customer("acme").features) == {} and dict(gateway.customer("globex").features) == {}


async def test_a_plan_updated_asks_for_its_subscribers_to_be_read_again(gateway, lago):
    await synced(gateway)
    lago.set_entitlements("sub-acme", {"llm_access": {"models": "o3"}})
    plan = {"lago_id": str(uuid.uuid4()), "code": "pro", "name": "Pro", "entitlements": []}

    assert (await gateway.post(lago.webhook("plan.updated", "plan", plan))).status_code == 200
    gateway.refresh()

    report = await gateway.side.run(due=True)
    assert report.refreshed == ["acme"] and dict(gateway.customer().features["llm_access"]) == {"models": "o3"}


async def test_an_unknown_type_or_customer_is_recorded_as_received_only(gateway, lago):
    await synced(gateway)
    before = len(gateway.events(customer_stream_id("acme")))
    invoice = {"lago_id": str(uuid.uuid4()), "external_customer_id": "acme", "total_amount_cents": 1200}
    stranger = lago.start_subscription("stranger")

    for payload in (lago.webhook("invoice.created", "invoice", invoice),
                    lago.webhook("subscription.started", "subscription", stranger)):
        response = await gateway.post(payload)
        assert response.status_code == 200
        (received,) = gateway.events(webhook_stream_id(response.request.headers["X-Lago-Unique-Key"]))
        assert received.customers == []

    assert len(gateway.events(customer_stream_id("acme"))) == before
    assert gateway.events(customer_stream_id("stranger")) == []


async def test_a_rotated_signing_key_is_fetched_again(gateway, lago):
    await synced(gateway)
    subscription = lago.webhook("subscription.updated", "subscription", lago.subscriptions[0])
    assert (await gateway.post(subscription, "jwt")).status_code == 200
    lago.rotate_webhook_key()

    assert (await gateway.post(subscription, "jwt")).status_code == 401  # refetched at most once a minute
    gateway.container.lago_inbox.signatures.refetch_after_s = 0
    assert (await gateway.post(subscription, "jwt")).status_code == 200
    assert len([r for r in lago.fake.requests if r.path == "/webhooks/json_public_key"]) == 2


async def test_a_jwt_webhook_while_lago_is_out_of_reach_is_a_503(gateway, lago):
    await synced(gateway)
    lago.fake.down()
    try:
        payload = lago.webhook("subscription.updated", "subscription", lago.subscriptions[0])
        response = await gateway.post(payload, "jwt")
    finally:
        lago.fake.up()
    assert response.status_code == 503 and response.json()["error"]["code"] == "lago_unreachable"


async def test_an_hmac_webhook_without_a_configured_key_is_refused(world, lago):
    gateway = Gateway(world, lago, webhook_hmac_key=None)
    try:
        response = await gateway.post(lago.webhook("invoice.created", "invoice", {"lago_id": "x"}))
    finally:
        await gateway.close()
    assert response.status_code == 401


async def test_no_lago_secret_reaches_the_ledger_or_the_log(gateway, lago, caplog):
    caplog.set_level(logging.DEBUG)
    wallet = await synced(gateway)
    await gateway.post(lago.webhook("wallet.depleted_ongoing_balance", "wallet", wallet))
    await gateway.post(lago.webhook("wallet.depleted_ongoing_balance", "wallet", wallet), "jwt")
    await gateway.post(lago.webhook("wallet.depleted_ongoing_balance", "wallet", wallet), hmac_key="wrong")
    gateway.refresh()

    stored = b"".join(n.state for n in gateway.world.app.recorder.select_notifications(1, 10_000))
    views = repr(gateway.side.view.sync_status()) + repr(gateway.side.view.customers_changed_since(0))
    for secret in (API_KEY, lago.hmac_key):
        assert secret.encode() not in stored and secret not in views and secret not in caplog.text


# -- readiness -------------------------------------------------------------------------------------


def readiness(gateway: Gateway) -> httpx.Response:
    with gateway.world.store.transaction() as cur:
        tracking.beat(cur, DEFAULT_NAME, datetime.now(UTC))  # the read side is alive
    gateway.container.views = SpendQueries(gateway.world.store)
    return TestClient(create_app(gateway.container)).get("/health/readiness")


async def test_readiness_is_503_while_lago_is_stale_and_calls_are_denied(gateway, lago):
    response = readiness(gateway)
    assert response.status_code == 503 and response.json()["status"] == "unhealthy"
    assert response.json()["lago"] == {"last_sync_at": None, "stale": True, "on_unreachable": "deny"}

    report = await gateway.side.run()
    gateway.refresh()
    response = readiness(gateway)
    assert response.status_code == 200 and response.json()["status"] == "healthy"
    assert response.json()["lago"] == {"last_sync_at": report.started_at.isoformat(), "stale": False,
                                       "on_unreachable": "deny"}


async def test_readiness_stays_ready_while_lago_is_stale_when_calls_are_allowed(world, lago):
    gateway = Gateway(world, lago, on_unreachable="allow")
    try:
        response = readiness(gateway)
    finally:
        await gateway.close()
    assert response.status_code == 200
    assert response.json()["lago"] == {"last_sync_at": None, "stale": True, "on_unreachable": "allow"}
