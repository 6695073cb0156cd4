"""Budgets at a past moment (`GET /audit/budgets`, `moneta audit budgets`), from the events up to
it: a later budget change, later calls and a call in flight then are each where they belong."""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from eventsourcing.utils import get_topic

from moneta.api.cli import main
from moneta.application.audit_budgets import budgets_at
from moneta.application.budget_check import BudgetSettings
from moneta.application.management.keys import token_of
from moneta.domain.access import VirtualKey
from moneta.domain.request_record import RequestRecord
from tests.live_server import LiveServer

MASTER = "sk-master-audit-pit-0001"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
# 8 prompt and 8 completion tokens at the mock's demo price: 0.000024 USD a call, all of it reserved
CALL_COST = Decimal("0.000024")
SLOW_S = 4.0


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A key with a $10 budget: two calls, then a slow call in flight at `at`; after `at`, another call
    and the budget raised to $20."""
    workdir = tmp_path_factory.mktemp("audit-pit")
    config = {"model_list": [{"model_name": "m1", "litellm_params": {"model": "mock/mock-gpt"}},
                             {"model_name": "slow", "litellm_params": {"model": "mock/mock-gpt",
                                                                       "mock_latency_ms": int(SLOW_S * 1000)}}],
              "general_settings": {"master_key": MASTER}}
    url = f"sqlite:///{workdir / 'ledger.db'}"
    with LiveServer(config, workdir, env={"DATABASE_URL": url}) as server:
        base = server.base_url
        key = _post(base, "/key/generate", {"key_alias": "auditee", "max_budget": 10})["key"]
        caller = {"Authorization": f"Bearer {key}"}
        for _ in range(2):
            assert httpx.post(base + "/v1/chat/completions", headers=caller, json=chat("m1"), timeout=30).status_code == 200
        slow = threading.Thread(target=lambda: httpx.post(base + "/v1/chat/completions", headers=caller,
                                                          json=chat("slow"), timeout=60))
        slow.start()
        _until(lambda: _budgets(base, scope="key:auditee")["reservations"] == 1)
        at = datetime.now(UTC)
        time.sleep(0.01)
        assert httpx.post(base + "/v1/chat/completions", headers=caller, json=chat("m1"), timeout=30).status_code == 200
        _post(base, "/key/update", {"key": key, "max_budget": 20})
        slow.join(60)
        _until(lambda: _budgets(base, scope="key:auditee")["calls"] == 4)
        yield {"base": base, "url": url, "key": key, "at": at}


def _post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(base + path, headers=ADMIN, json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _budgets(base: str, headers: dict[str, str] = ADMIN, **params: str) -> dict[str, Any]:
    response = httpx.get(base + "/audit/budgets", headers=headers, params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the ledger did not get there in time"
        time.sleep(0.1)


def test_the_budget_at_a_past_moment_is_the_one_then(history):
    then = _budgets(history["base"], scope="key:auditee", at=history["at"].isoformat())
    assert then["at"] == history["at"].isoformat() and then["scope"].startswith("key:")
    assert then["key_alias"] == "auditee" and then["token"] == token_of(history["key"])
    assert then["max_budget"] == 10 and then["max_budget_exact"] == "10"
    assert then["period_start"] == "lifetime" and then["budget_reset_at"] is None
    assert Decimal(then["spend_exact"]) == 2 * CALL_COST and then["spend"] == float(2 * CALL_COST)
    assert then["calls"] == 2
    assert then["reservations"] == 1 and Decimal(then["reserved_exact"]) == CALL_COST


def test_now_the_later_events_count(history):
    now = _budgets(history["base"], scope="key:auditee")
    assert now["max_budget"] == 20
    assert Decimal(now["spend_exact"]) == 4 * CALL_COST and now["calls"] == 4
    assert now["reservations"] == 0 and Decimal(now["reserved_exact"]) == 0


def test_the_command_gives_the_same_answer_naming_the_key_by_its_hash(history, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", history["url"])
    main(["audit", "budgets", "--scope", f"key:{token_of(history['key'])}", "--at", history["at"].isoformat()])
    answer = json.loads(capsys.readouterr().out)
    assert answer == _budgets(history["base"], scope="key:auditee", at=history["at"].isoformat())


def test_without_a_scope_every_scope_is_given(history):
    every = _budgets(history["base"], at=history["at"].isoformat())
    one = _budgets(history["base"], scope="key:auditee", at=history["at"].isoformat())
    assert every["position"] == one["position"] > 0
    (key,) = [scope for scope in every["scopes"] if scope["scope"] == one["scope"]]
    assert key == {name: value for name, value in one.items() if name not in ("at", "position")}


def test_bad_questions_are_answered_with_openai_errors(history):
    base = history["base"]
    cases = [({"scope": "wallet:1"}, 400, "scope"), ({"scope": "key:nobody"}, 404, "scope"),
             ({"scope": "key:auditee", "at": "last tuesday"}, 400, "at"),
             ({"scope": "key:auditee", "at": "2001-01-01T00:00:00Z"}, 404, "scope")]  # no such key then
    for params, status, param in cases:
        response = httpx.get(base + "/audit/budgets", headers=ADMIN, params=params, timeout=30)
        assert response.status_code == status, response.text
        assert response.json()["error"]["param"] == param
    response = httpx.get(base + "/audit/budgets", headers={"Authorization": f"Bearer {history['key']}"}, timeout=30)
    assert response.status_code == 403


# -- the fold itself, on events with the timestamps of a story ---------------------------------------

def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 5, day, hour, minute, tzinfo=UTC)


def _story() -> tuple[str, list[Any]]:
    """A key with a daily $1 budget from May 1st: calls on May 1st and 2nd, one never ended (its
    lease lapses), one in flight at 10:03 on May 2nd, and the budget raised to $2 at 10:04."""
    key_id, key_stream = uuid.uuid4().hex, uuid.uuid4()
    scope = f"key:{key_id}"
    events: list[Any] = [VirtualKey.KeyGenerated(
        originator_id=key_stream, originator_version=1, timestamp=_at(1, 0), originator_topic=get_topic(VirtualKey),
        fields={"key_id": key_id, "token": "hash-1", "key_alias": "story", "max_budget": Decimal(1),
                "budget_duration": "1d"}, actor="master_key")]

    def call(admitted: datetime, period_day: int, reserved: str, ended: datetime | None = None,
             cost: str = "0") -> None:
        request = uuid.uuid4()
        period = _at(period_day, 0).isoformat()
        events.append(RequestRecord.Admitted(
            originator_id=request, originator_version=1, timestamp=admitted, originator_topic=get_topic(RequestRecord),
            call_type="chat", key_hash="hash-1", end_user="", model_group="m1", stream=False,
            decision={"budget": {"allowed": True, "reserved": reserved,
                                 "scopes": [{"scope": scope, "period": period, "limit": "1.000000000"}]}}))
        if ended is not None:
            events.append(RequestRecord.Completed(
                originator_id=request, originator_version=2, timestamp=ended, deployment_id="d", provider="mock",
                provider_model="m", usage={"prompt_tokens": 1}, cost=Decimal(cost), price_source="config",
                latency_ms=1.0, first_token_ms=None, finish_reason="stop"))

    call(_at(1, 10), 1, "0.5", _at(1, 10, 1), "0.3")
    call(_at(2, 9), 2, "0.5", _at(2, 9, 1), "0.2")
    call(_at(2, 9, 30), 2, "0.5")  # its process died: never ended
    request_d = len(events)
    call(_at(2, 10), 2, "0.4")
    events.append(VirtualKey.KeyUpdated(originator_id=key_stream, originator_version=2, timestamp=_at(2, 10, 4),
                                        changes={"max_budget": Decimal(2)}, actor="master_key"))
    ended = events[request_d]
    events.append(RequestRecord.Completed(
        originator_id=ended.originator_id, originator_version=2, timestamp=_at(2, 10, 5), deployment_id="d",
        provider="mock", provider_model="m", usage={}, cost=Decimal("0.1"), price_source="config", latency_ms=1.0,
        first_token_ms=None, finish_reason="stop"))
    return scope, events


def _pages(events: list[Any], beyond: datetime) -> Iterator[list[tuple[int, Any]]]:
    """The events a page each, then one stamped far later, then a page that must not be read."""
    for position, event in enumerate(events, start=1):
        yield [(position, event)]
    yield [(len(events) + 1, _Stamped(beyond))]
    raise AssertionError("read past the moment asked for")


class _Stamped:
    def __init__(self, timestamp: datetime) -> None:
        self.timestamp = timestamp


def test_the_period_then_the_lease_and_the_limit_then():
    scope, events = _story()
    at = _at(2, 10, 3)
    answer = budgets_at(_pages(events, at + timedelta(hours=1)), BudgetSettings(), "key:story", at)
    assert answer["scope"] == scope and answer["max_budget"] == Decimal(1)
    assert answer["period_start"] == _at(2, 0).isoformat() and answer["budget_reset_at"] == _at(3, 0).isoformat()
    assert answer["spend"] == Decimal("0.2") and answer["calls"] == 1  # May 1st's call is another period
    assert answer["reserved"] == Decimal("0.4") and answer["reservations"] == 1  # the dead call's lease lapsed
    assert answer["position"] == len(events) - 2  # the update and the last completion came after
    day_before = budgets_at(_pages(events, _at(3, 0)), BudgetSettings(), "key:hash-1", _at(1, 23, 59))
    assert day_before["spend"] == Decimal("0.3") and day_before["period_start"] == _at(1, 0).isoformat()
    later = budgets_at(_pages(events, _at(3, 0)), BudgetSettings(), None, _at(2, 11))
    (only,) = later["scopes"]
    assert only["max_budget"] == Decimal(2) and only["spend"] == Decimal("0.3") and only["reservations"] == 0
