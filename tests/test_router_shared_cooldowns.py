"""Two real server processes sharing one Redis: a cooldown set by one is honoured by the other."""
from __future__ import annotations

import time
from typing import Any, Iterator

import httpx
import pytest
import redis

from moneta.domain.deployment_health import health_id
from moneta.infrastructure.cooldowns_redis import CACHE_S, COOLDOWNS
from moneta.infrastructure.event_store import StoreLocation
from tests.fake_openai import FakeOpenAI
from tests.live_server import LiveServer

HELLO = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    bad, good = FakeOpenAI().start(), FakeOpenAI().start()
    yield bad, good
    bad.stop()
    good.stop()


def _config(redis_url: str, postgres_url: str, bad: FakeOpenAI, good: FakeOpenAI) -> dict[str, Any]:
    def upstream(name: str, fake: FakeOpenAI, order: int) -> dict[str, Any]:
        return {"model_name": "shared", "model_info": {"id": name},
                "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": fake.base_url, "api_key": fake.api_key,
                                   "order": order}}

    doomed = [{"model_name": "doomed", "model_info": {"id": f"doomed-{i}"},
               "litellm_params": {"model": f"mock/doomed-{i}", "mock_failure_rate": 1, "mock_failure_status": 429}}
              for i in (1, 2)]
    return {"model_list": [upstream("primary", bad, 1), upstream("backup", good, 2), *doomed],
            "router_settings": {"redis_url": redis_url, "allowed_fails": 1, "cooldown_time": 120},
            "general_settings": {"database_url": postgres_url}}


def test_a_cooldown_set_by_one_process_is_honoured_by_another(tmp_path, redis_url, postgres_url, fakes):
    bad, good = fakes
    bad.fail_with = (500, {"message": "upstream exploded", "type": "server_error"})
    config = _config(redis_url, postgres_url, bad, good)
    with LiveServer(config, tmp_path) as first, LiveServer(config, tmp_path) as second:
        for _ in range(2):  # the primary fails twice in the first process: more than allowed_fails=1
            response = httpx.post(first.base_url + "/v1/chat/completions", json={"model": "shared", **HELLO}, timeout=30)
            assert response.status_code == 200
        assert len(bad.requests) == 2
        cooling = redis.Redis.from_url(redis_url).zrange(COOLDOWNS, 0, -1)
        assert cooling == [b"primary"]
        time.sleep(CACHE_S + 0.1)  # each process re-reads the cooldowns every CACHE_S

        for _ in range(5):
            response = httpx.post(second.base_url + "/v1/chat/completions", json={"model": "shared", **HELLO},
                                  timeout=30)
            assert response.status_code == 200
        assert len(bad.requests) == 2  # the second process never tried the cooling primary
        assert len(good.requests) == 7

        failed = httpx.post(first.base_url + "/v1/chat/completions", json={"model": "doomed", **HELLO}, timeout=30)
        assert failed.status_code == 429
        time.sleep(CACHE_S + 0.1)  # the second process has routed within its cache interval: let it lapse
        refused = httpx.post(second.base_url + "/v1/chat/completions", json={"model": "doomed", **HELLO}, timeout=30)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 100
        error = refused.json()["error"]
        assert error["code"] == "model_group_cooling_down" and "model group 'doomed'" in error["message"]

    app = StoreLocation.from_url(postgres_url).open()
    try:
        events = [type(e).__name__ for e in app.repository.event_store.get(health_id("primary"))]
    finally:
        app.close()
    assert events == ["Registered", "CooledDown"]  # recorded once, by the process that started it
