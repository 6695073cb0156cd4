"""Budgets as promises: concurrent calls never spend past a budget, a call is made to fit what is
left, and every decision is in the ledger."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from moneta.domain.budgets import BudgetLine, Headroom, decide, period, to_nanos
from moneta.infrastructure.event_store import StoreLocation
from tests.fake_openai import FakeOpenAI
from tests.live_server import LiveServer
from tests.webhook_receiver import WebhookReceiver

MASTER = "sk-master-budgets-0001"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
# The mock answers "This is a mock response to: hi": 8 prompt and 8 completion tokens, at the
# mock's demo price ($1 and $2 per million): 0.000024 USD a call, all of it reserved with max_tokens 8.
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
CALL_COST = Decimal("0.000024")


def config(**litellm: Any) -> dict[str, Any]:
    return {"model_list": [{"model_name": "m1", "litellm_params": {"model": "mock/mock-gpt"}}],
            "general_settings": {"master_key": MASTER}, "litellm_settings": litellm}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("budgets")
    url = f"sqlite:///{workdir / 'ledger.db'}"
    with LiveServer(config(), workdir, env={"DATABASE_URL": url}) as live:
        live.ledger_url = url  # type: ignore[attr-defined]
        yield live


def admin(base_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(base_url + path, headers=ADMIN, json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def storm(base_url: str, keys: list[str], calls: int, body: dict[str, Any] = CHAT, at_once: int = 1000) -> Counter[int]:
    """`calls` calls, `at_once` at a time; a call the server never answers counts as 0."""
    async def run() -> list[int]:
        gate = asyncio.Semaphore(at_once)
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            async def one(n: int) -> int:
                async with gate:
                    try:
                        return (await client.post("/v1/chat/completions", json=body, headers={
                            "Authorization": f"Bearer {keys[n % len(keys)]}"})).status_code
                    except httpx.TransportError:
                        return 0
            return await asyncio.gather(*(one(n) for n in range(calls)))
    return Counter(asyncio.run(run()))


def spent(base_url: str, **filters: str) -> Decimal:
    """The spend the ledger recorded (the spend log, once the views have caught up)."""
    total, deadline = None, time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = httpx.get(base_url + "/spend/logs", headers=ADMIN, params={**filters, "page_size": 1000},
                         timeout=30).json()
        now = sum((Decimal(row["spend_exact"]) for row in rows), Decimal(0))
        if now == total:
            return now
        total = now
        time.sleep(0.3)
    raise AssertionError("the spend log did not settle")


def events(ledger_url: str, request_id: str) -> list[Any]:
    store = StoreLocation.from_url(ledger_url).open()
    try:
        return list(store.events.get(uuid.UUID(request_id)))
    finally:
        store.close()


# -- the domain ------------------------------------------------------------------------------------

def test_periods_follow_the_budget_start_or_the_calendar() -> None:
    start = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    assert period("30s", start, datetime(2026, 1, 31, 10, 1, 5, tzinfo=UTC))[0] == datetime(2026, 1, 31, 10, 1,
                                                                                            tzinfo=UTC)
    assert period("1mo", start, datetime(2026, 3, 15, tzinfo=UTC)) == (datetime(2026, 2, 28, 10, tzinfo=UTC),
                                                                       datetime(2026, 3, 31, 10, tzinfo=UTC))
    paris = ZoneInfo("Europe/Paris")
    day, end = period("1d", start, datetime(2026, 2, 2, 5, tzinfo=UTC), paris)
    assert (day, end) == (datetime(2026, 2, 2, tzinfo=paris), datetime(2026, 2, 3, tzinfo=paris))
    assert period("1w", start, datetime(2026, 2, 4, tzinfo=UTC), paris)[0] == datetime(2026, 2, 2, tzinfo=paris)
    assert period(None, start, datetime(2030, 1, 1, tzinfo=UTC)) == (start, None)


def test_a_reservation_takes_what_is_wanted_or_what_fits_or_nothing() -> None:
    roomy = Headroom(BudgetLine("key:a", "lifetime", 1000, None), 100, 0)
    tight = Headroom(BudgetLine("team:t", "lifetime", 500, None), 300, 150)
    assert decide([roomy], 200, 50).reserved == 200
    partial = decide([roomy, tight], 200, 30)
    assert partial.allowed and partial.reserved == 50  # the team has 50 left
    refused = decide([roomy, tight], 200, 60)
    assert not refused.allowed and refused.refused is not None and refused.refused.line.scope == "team:t"
    assert to_nanos(Decimal("0.0000000001"), up=True) == 1 and to_nanos(Decimal("0.0000000019"), up=False) == 1


# -- over HTTP -------------------------------------------------------------------------------------

def test_a_storm_of_calls_never_spends_past_a_key_budget(server: LiveServer) -> None:
    key = admin(server.base_url, "/key/generate", {"max_budget": str(CALL_COST * 50)})
    statuses = storm(server.base_url, [key["key"]], 200)

    assert statuses[200] == 50 and statuses[429] == 150
    assert spent(server.base_url, api_key=key["token"]) == CALL_COST * 50  # all of it, not a nano-dollar more


def test_a_team_budget_holds_across_its_keys_and_a_customer_budget_across_keys(server: LiveServer) -> None:
    admin(server.base_url, "/team/new", {"team_id": "spenders", "max_budget": str(CALL_COST * 30)})
    keys = [admin(server.base_url, "/key/generate", {"team_id": "spenders"})["key"] for _ in range(4)]
    assert storm(server.base_url, keys, 120)[200] == 30
    assert spent(server.base_url) >= CALL_COST * 30  # the other tests' spend too

    admin(server.base_url, "/customer/new", {"user_id": "buyer", "max_budget": str(CALL_COST * 20)})
    keys = [admin(server.base_url, "/key/generate", {})["key"] for _ in range(3)]
    assert storm(server.base_url, keys, 80, {**CHAT, "user": "buyer"})[200] == 20
    assert spent(server.base_url, user_id="buyer") == CALL_COST * 20


def test_a_refusal_names_the_budget_and_is_in_the_ledger_with_the_counters(server: LiveServer) -> None:
    key = admin(server.base_url, "/key/generate", {"max_budget": str(CALL_COST), "budget_duration": "30d"})
    headers = {"Authorization": f"Bearer {key['key']}"}
    assert httpx.post(server.base_url + "/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    refused = httpx.post(server.base_url + "/v1/chat/completions", json=CHAT, headers=headers)

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "budget_exceeded" and f"key:{key['key_id']}" in error["message"]
    assert "limit 0.000024 USD, spent 0.000024 USD" in error["message"] and "it resets at" in error["message"]
    (denied,) = events(server.ledger_url, refused.headers["x-request-id"])  # type: ignore[attr-defined]
    budget = denied.decision["budget"]
    assert not budget["allowed"] and budget["refused_scope"] == f"key:{key['key_id']}"
    assert Decimal(budget["scopes"][0]["spent"]) == CALL_COST and budget["scopes"][0]["resets_at"]


def test_a_call_is_made_to_fit_what_is_left(server: LiveServer) -> None:
    # Input 8 tokens (8e-6) and 4 output tokens (8e-6) fit in 0.000016; 8 asked output tokens do not.
    key = admin(server.base_url, "/key/generate", {"max_budget": "0.000016"})
    answer = httpx.post(server.base_url + "/v1/chat/completions", json=CHAT,
                        headers={"Authorization": f"Bearer {key['key']}"})
    assert answer.status_code == 200
    admitted = events(server.ledger_url, answer.headers["x-request-id"])[0]  # type: ignore[attr-defined]
    assert admitted.decision["budget"]["max_tokens_capped_to"] == 4
    assert Decimal(admitted.decision["budget"]["reserved"]) == Decimal("0.000016")


def test_a_period_ends_and_the_next_one_starts_empty(server: LiveServer) -> None:
    key = admin(server.base_url, "/key/generate", {"max_budget": str(CALL_COST), "budget_duration": "2s"})
    headers = {"Authorization": f"Bearer {key['key']}"}
    post = lambda: httpx.post(server.base_url + "/v1/chat/completions", json=CHAT, headers=headers).status_code
    first = [post(), post()]
    assert first in ([200, 429], [200, 200])  # the second may fall into the next period already
    time.sleep(2.1)
    assert post() == 200


def test_spend_survives_a_restart_in_the_middle_of_a_storm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    slow = {"model_name": "m1", "litellm_params": {"model": "mock/mock-gpt", "mock_latency_ms": 100}}
    settings = {**config(), "model_list": [slow]}
    before: Counter[int] = Counter()
    with LiveServer(settings, tmp_path, env={"DATABASE_URL": url}) as live:
        key = admin(live.base_url, "/key/generate", {"max_budget": str(CALL_COST * 80)})
        storming = threading.Thread(target=lambda: before.update(storm(live.base_url, [key["key"]], 100, at_once=10)))
        storming.start()
        time.sleep(0.6)
        live.kill()  # kill -9 mid-storm: the calls in flight die with it, unpaid
        storming.join()
    with LiveServer(settings, tmp_path, env={"DATABASE_URL": url}) as live:
        after = storm(live.base_url, [key["key"]], 100)
        total = spent(live.base_url, api_key=key["token"])
    assert 0 < before[200] < 80 and before[0] > 0, before  # the kill came in the middle
    assert before[200] + after[200] == 80 and total == CALL_COST * 80, (before, after, total)


def test_an_overrun_is_charged_in_full_and_recorded(tmp_path: Path) -> None:
    upstream = FakeOpenAI(usage={"prompt_tokens": 10, "completion_tokens": 50, "total_tokens": 60}).start()
    priced = {"model_name": "m1", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": upstream.base_url, "api_key": upstream.api_key,
        "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}}
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    try:
        with LiveServer({**config(), "model_list": [priced]}, tmp_path, env={"DATABASE_URL": url}) as live:
            key = admin(live.base_url, "/key/generate", {"max_budget": "1"})
            answer = httpx.post(live.base_url + "/v1/chat/completions", json=CHAT,
                                headers={"Authorization": f"Bearer {key['key']}"})
            assert answer.status_code == 200 and upstream.requests[-1].body["max_tokens"] == 8
            names = [type(e).__name__ for e in events(url, answer.headers["x-request-id"])]
            overrun = events(url, answer.headers["x-request-id"])[-1]
            assert spent(live.base_url, api_key=key["token"]) == Decimal("0.00011")
    finally:
        upstream.stop()
    assert names[-1] == "BudgetOverrun" and overrun.charged == Decimal("0.00011")
    assert overrun.reserved < overrun.charged


def test_info_routes_show_the_budget_now(server: LiveServer) -> None:
    key = admin(server.base_url, "/key/generate", {"max_budget": "0.5", "soft_budget": "0.25",
                                                    "budget_duration": "30d"})
    assert httpx.post(server.base_url + "/v1/chat/completions", json=CHAT,
                      headers={"Authorization": f"Bearer {key['key']}"}).status_code == 200
    info = httpx.get(server.base_url + "/key/info", params={"key": key["key"]}, headers=ADMIN).json()["info"]
    budget = info["budget"]
    assert budget["scope"] == f"key:{key['key_id']}" and budget["max_budget_exact"] == "0.5"
    assert budget["spend_exact"] == str(CALL_COST) and budget["reserved_exact"] == "0"
    assert budget["soft_budget_exact"] == "0.25" and info["budget_reset_at"] == budget["budget_reset_at"]
    admin(server.base_url, "/team/new", {"team_id": "shown", "max_budget": 3})
    team = httpx.get(server.base_url + "/team/info", params={"team_id": "shown"}, headers=ADMIN).json()
    assert team["team_info"]["budget"]["period_start"] == "lifetime" and team["team_info"]["budget_reset_at"] is None


def test_a_soft_budget_alert_reaches_a_webhook_once_and_signed(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    receiver = asyncio.run_coroutine_threadsafe(WebhookReceiver().start(), loop).result(10)
    secret = "whsec-budget-test"
    settings = {**config(), "general_settings": {**config()["general_settings"], "alerting": ["webhook"],
                                                 "alerting_webhook_url": receiver.url,
                                                 "alerting_webhook_secret": secret}}
    try:
        with LiveServer(settings, tmp_path) as live:
            key = admin(live.base_url, "/key/generate", {"max_budget": str(CALL_COST * 10),
                                                         "soft_budget": str(CALL_COST * 3)})
            for _ in range(5):
                assert httpx.post(live.base_url + "/v1/chat/completions", json=CHAT,
                                  headers={"Authorization": f"Bearer {key['key']}"}).status_code == 200
            deadline = time.monotonic() + 20
            while not receiver.received:
                assert time.monotonic() < deadline, "no alert reached the webhook"
                time.sleep(0.1)
            time.sleep(1.5)  # a second delivery, were there one, would have come by now
    finally:
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    (alert,) = receiver.received
    body = json.loads(alert.body)
    assert body["kind"] == "soft_budget" and body["scope"] == f"key:{key['key_id']}"
    assert Decimal(body["threshold"]) == CALL_COST * 3 and Decimal(body["spend"]) == CALL_COST * 3
    timestamp = alert.headers["X-Moneta-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + alert.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(alert.headers["X-Moneta-Signature"], f"sha256={expected}")
