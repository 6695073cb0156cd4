"""check_entitlement(): a call is admitted only for a customer Lago entitles (an active subscription,
the configured feature, its models) whose prepaid wallet covers the call's reservation; decided
from the gateway's own state (the synced billing view and the ledger), never by asking Lago."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from moneta.domain.budgets import BudgetLine, to_nanos
from moneta.domain.request_record import RequestRecord
from moneta.infrastructure.event_store import StoreLocation
from moneta.projections.budgets import BudgetViewReader
from tests.fake_lago import FakeLago
from tests.fake_lago_billing import Billing, install
from tests.ledger_world import World
from tests.live_server import LiveServer

MASTER = "sk-master-entitlement-0001"
LAGO_KEY = "lago-key-entitlement-never-shown"
# The mock's "hi" call: 8 prompt and 8 completion tokens at $1 and $2 per million, all of it reserved
# with max_tokens 8.
CALL_COST = Decimal("0.000024")


@pytest.fixture(scope="module")
def lago() -> Iterator[Billing]:
    fake = FakeLago(api_key=LAGO_KEY)
    billing = install(fake)
    fake.start()
    yield billing
    fake.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, lago: Billing) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("entitlement")
    config = {
        "model_list": [{"model_name": name, "litellm_params": {"model": "mock/mock-gpt"}} for name in ("m1", "m2")],
        "general_settings": {"master_key": MASTER},
        "moneta_settings": {"askii_per_usd": 1000, "lago": {
            "api_url": lago.fake.url, "api_key": "os.environ/LAGO_API_KEY", "entitlement_feature": "llm_access",
            "sync_interval_s": 1, "max_staleness_s": 600}},
    }
    url = f"sqlite:///{workdir / 'ledger.db'}"
    with LiveServer(config, workdir, env={"DATABASE_URL": url, "LAGO_API_KEY": LAGO_KEY}, workers=2) as live:
        live.ledger_url = url  # type: ignore[attr-defined]
        yield live


def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=MASTER, base_url=server.base_url + "/v1", max_retries=0)


def chat(server: LiveServer, customer: str, model: str = "m1") -> httpx.Response:
    return httpx.post(server.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                            "user": customer}, timeout=30)


def entitled_customer(lago: Billing, customer: str, credits: str | None = "1", models: str = "m1") -> None:
    subscription = lago.start_subscription(customer, external_id=f"sub-{customer}", plan_code="pro")
    lago.set_entitlements(subscription["external_id"], {"llm_access": {"models": models}})
    if credits is not None:
        lago.add_wallet(customer, credits=credits, rate_amount="1")


def until_admitted(server: LiveServer, customer: str, timeout: float = 20.0) -> httpx.Response:
    """The first calls of a customer the gateway never saw are refused; the sync reads it within seconds."""
    deadline = time.monotonic() + timeout
    while True:
        response = chat(server, customer)
        if response.status_code != 403 or time.monotonic() > deadline:
            return response
        time.sleep(0.3)


def ledger_events(server: LiveServer, request_id: str) -> list[Any]:
    app = StoreLocation.from_url(server.ledger_url).open()  # type: ignore[attr-defined]
    try:
        return list(app.events.get(uuid.UUID(request_id)))
    finally:
        app.close()


def test_an_entitled_customer_is_admitted_with_the_numbers_in_its_admitted_event(server, lago):
    entitled_customer(lago, "acme")

    response = until_admitted(server, "acme")

    assert response.status_code == 200, response.text
    admitted = ledger_events(server, response.headers["x-request-id"])[0]
    assert isinstance(admitted, RequestRecord.Admitted)
    entitlement = admitted.decision["entitlement"]
    assert entitlement["entitled"] is True and entitlement["stale"] is False
    assert (entitlement["customer"], entitlement["subscription"], entitlement["plan"]) == ("acme", "sub-acme", "pro")
    assert entitlement["feature"] == "llm_access" and entitlement["models_allowed"] == ["m1"]
    wallet = entitlement["wallet"]
    assert Decimal(wallet["balance_usd"]) == Decimal("1") and Decimal(wallet["balance_askii"]) == Decimal("1000")
    (line,) = [s for s in admitted.decision["budget"]["scopes"] if s["scope"] == "wallet:acme"]
    assert Decimal(line["limit"]) >= Decimal("1")


def test_a_customer_without_subscription_is_refused_403_and_recorded_as_denied(server, lago):
    lago.add_customer("nosub")

    response = chat(server, "nosub")

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "entitlement_denied" and error["type"] == "permission_error"
    assert "no active subscription" in error["message"] and LAGO_KEY not in response.text
    (denied,) = ledger_events(server, response.headers["x-request-id"])
    assert isinstance(denied, RequestRecord.Denied) and denied.code == "entitlement_denied"
    assert denied.decision["entitlement"] == {"customer": "nosub", "stale": False, "entitled": False}


def test_a_model_outside_the_features_models_privilege_is_refused(server, lago):
    entitled_customer(lago, "only-m2", models="m2")
    assert until_admitted(server, "only-m2").status_code == 403  # m1 is not in its list

    assert chat(server, "only-m2", model="m2").status_code == 200
    refused = chat(server, "only-m2", model="m1")
    assert refused.status_code == 403 and "'m1'" in refused.json()["error"]["message"]


def test_a_call_naming_no_customer_is_refused(server):
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(server).chat.completions.create(model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert refused.value.code == "entitlement_denied" and "x-litellm-end-user-id" in refused.value.message


def test_a_wallet_that_runs_dry_under_100_concurrent_calls_admits_nothing_beyond_its_balance(server, lago):
    entitled_customer(lago, "dry", credits=str(CALL_COST * 11))  # one call to be seen, ten in the storm
    assert until_admitted(server, "dry").status_code == 200

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as http:
            body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "user": "dry"}
            return list(await asyncio.gather(*(
                http.post(server.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                          json=body) for _ in range(100))))
    responses = asyncio.run(storm())

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 10, 429: 90}, statuses
    refusal = next(r for r in responses if r.status_code == 429).json()["error"]
    assert (refusal["type"], refusal["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "wallet of customer 'dry'" in refusal["message"]
    denied = ledger_events(server, next(r for r in responses if r.status_code == 429).headers["x-request-id"])[0]
    assert denied.decision["budget"]["refused_scope"] == "wallet:dry"
    charged = sum((ledger_events(server, r.headers["x-request-id"])[-1].cost for r in responses
                   if r.status_code == 200), Decimal(0))
    assert charged + CALL_COST <= CALL_COST * 11  # the call before the storm was charged too


def test_a_wallet_charged_before_lago_computed_its_balance_is_not_charged_twice(tmp_path):
    """The wallet's limit is Lago's balance plus what the ledger charged before Lago computed it."""
    world = World(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        line = BudgetLine("wallet:w", "lifetime", to_nanos(Decimal(1), up=False), None)
        record = RequestRecord.admit(uuid.uuid4(), call_type="chat", key_hash="h", end_user="w", model_group="m",
                                     stream=False, decision={"budget": {"scopes": [
                                         {"scope": line.scope, "period": line.period, "limit": "1", "soft": None,
                                          "spent": "0", "reserved": "0", "resets_at": None}]}})
        record.complete(deployment_id="d", provider="p", provider_model="m", usage=_usage(), cost=Decimal("0.25"),
                        price_source="test", latency_ms=1.0)
        world.ledger.record_blocking(record, timeout=10)
        world.runner.catch_up()
        reader = BudgetViewReader(world.store, world.last_position, world.runner.name)
        now = datetime.now(UTC)

        assert reader.spent_before("wallet:w", now + timedelta(minutes=2)) == Decimal("0.25")
        assert reader.spent_before("wallet:w", now - timedelta(minutes=2)) == Decimal(0)
        assert reader.spent([line]) == [to_nanos(Decimal("0.25"), up=True)]
    finally:
        world.close()


def _usage() -> Any:
    from moneta.domain.usage import Usage

    return Usage(prompt_tokens=10, completion_tokens=5)
