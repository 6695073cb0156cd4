"""Rate limits as callers meet them: OpenAI's headers, a 429 naming the scope, the counters in
the ledger, and one limit for the whole server, whatever its number of processes."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from moneta.infrastructure.event_store import StoreLocation
from tests.live_server import LiveServer
from tests.test_access_management import ADMIN, MASTER, MODELS, config

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("limits")
    url = f"sqlite:///{workdir / 'ledger.db'}"
    slow = {"model_name": "slow", "litellm_params": {"model": "mock/mock-gpt", "mock_latency_ms": 500}}
    with LiveServer({**config(), "model_list": [*MODELS, slow]}, workdir, env={"DATABASE_URL": url}) as live:
        live.ledger_url = url  # type: ignore[attr-defined]
        yield live


def new_key(base_url: str, **fields: Any) -> str:
    response = httpx.post(base_url + "/key/generate", headers=ADMIN, json=fields, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["key"]


def call(base_url: str, key: str, body: dict[str, Any] = CHAT) -> httpx.Response:
    return httpx.post(base_url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=30)


def events(ledger_url: str, request_id: str) -> list[Any]:
    store = StoreLocation.from_url(ledger_url).open()
    try:
        return list(store.events.get(uuid.UUID(request_id)))
    finally:
        store.close()


def test_rpm_answers_openai_headers_then_a_429_naming_the_scope(server: LiveServer) -> None:
    key = new_key(server.base_url, rpm_limit=3)
    answers = [call(server.base_url, key) for _ in range(4)]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [answer.headers["x-ratelimit-remaining-requests"] for answer in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[0].headers["x-ratelimit-reset-requests"].endswith("s")
    refused = answers[3]
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert error["message"].startswith("Rate limit reached for key:") and "rpm_limit 3" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 120  # the previous minute fades out over the next
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"

    admitted = events(server.ledger_url, answers[0].headers["x-request-id"])[0]  # type: ignore[attr-defined]
    (scope,) = admitted.decision["limits"]["scopes"]
    assert scope["scope"].startswith("key:") and scope["rpm"] == 3 and scope["requests"] == 0
    (denied,) = events(server.ledger_url, refused.headers["x-request-id"])  # type: ignore[attr-defined]
    assert type(denied).__name__ == "Denied" and denied.status_code == 429
    assert denied.decision["limits"]["refused_limit"] == "rpm" and denied.decision["limits"]["scopes"][0]["requests"] == 3


def test_tpm_counts_the_tokens_each_call_used(server: LiveServer) -> None:
    key = new_key(server.base_url, tpm_limit=5)
    first = call(server.base_url, key)
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] >= 5
    assert first.headers["x-ratelimit-remaining-tokens"] == "5"  # nothing counted until the call ended
    second = call(server.base_url, key)
    assert second.status_code == 429 and "tpm_limit 5" in second.json()["error"]["message"]


def test_max_parallel_requests_holds_while_calls_are_in_flight(server: LiveServer) -> None:
    key = new_key(server.base_url, max_parallel_requests=1)
    slow = {**CHAT, "model": "slow"}

    async def both() -> list[int]:
        async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            answers = await asyncio.gather(*(client.post(server.base_url + "/v1/chat/completions", json=slow)
                                             for _ in range(2)))
        return sorted(answer.status_code for answer in answers)

    assert asyncio.run(both()) == [200, 429]
    assert call(server.base_url, key).status_code == 200  # the slot came back when the call ended


def test_per_model_limits_of_a_key(server: LiveServer) -> None:
    key = new_key(server.base_url, model_rpm_limit={"m1": 1})
    assert call(server.base_url, key).status_code == 200
    refused = call(server.base_url, key)
    assert refused.status_code == 429 and ":m1" in refused.json()["error"]["message"]
    assert call(server.base_url, key, {**CHAT, "model": "m2"}).status_code == 200


def test_a_team_limit_holds_across_its_keys_and_an_end_user_limit_through_its_budget(server: LiveServer) -> None:
    httpx.post(server.base_url + "/team/new", headers=ADMIN, json={"team_id": "limited", "rpm_limit": 2})
    keys = [new_key(server.base_url, team_id="limited") for _ in range(2)]
    assert [call(server.base_url, key).status_code for key in keys] == [200, 200]
    refused = call(server.base_url, keys[0])
    assert refused.status_code == 429 and "team:limited" in refused.json()["error"]["message"]

    httpx.post(server.base_url + "/budget/new", headers=ADMIN, json={"budget_id": "one-a-minute", "rpm_limit": 1})
    httpx.post(server.base_url + "/customer/new", headers=ADMIN, json={"user_id": "eve", "budget_id": "one-a-minute"})
    key = new_key(server.base_url)
    assert call(server.base_url, key, {**CHAT, "user": "eve"}).status_code == 200
    refused = call(server.base_url, key, {**CHAT, "user": "eve"})
    assert refused.status_code == 429 and "customer:eve" in refused.json()["error"]["message"]
    assert call(server.base_url, key, {**CHAT, "user": "frank"}).status_code == 200


def test_the_master_key_and_keys_without_limits_take_no_limit_headers(server: LiveServer) -> None:
    answer = call(server.base_url, MASTER)
    assert answer.status_code == 200 and "x-ratelimit-remaining-requests" not in answer.headers


def admitted_of(base_urls: list[str], key: str, calls: int) -> int:
    return sum(call(base_urls[n % len(base_urls)], key).status_code == 200 for n in range(calls))


def test_two_servers_sharing_redis_share_one_limit(postgres_url: str, redis_url: str, tmp_path: Path) -> None:
    shared = {**config(), "router_settings": {"redis_url": redis_url}}
    env = {"DATABASE_URL": postgres_url}
    with LiveServer(shared, tmp_path, env=env) as one, LiveServer(shared, tmp_path, env=env) as two:
        key = new_key(one.base_url, rpm_limit=5)
        assert admitted_of([one.base_url, two.base_url], key, 10) == 5
        ready = httpx.get(two.base_url + "/health/readiness").json()
    assert ready["rate_limits"] == "redis"


def test_workers_without_redis_share_one_limit_through_the_database(tmp_path: Path) -> None:
    with LiveServer(config(), tmp_path, workers=2) as live:
        key = new_key(live.base_url, rpm_limit=5)
        # A fresh connection per call: the kernel spreads them over both workers.
        assert admitted_of([live.base_url], key, 12) == 5
        assert httpx.get(live.base_url + "/health/readiness").json()["rate_limits"] == "database"
