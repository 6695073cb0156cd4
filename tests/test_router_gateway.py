"""Routing through the Gateway use cases: the mock provider's failure injection, fake upstreams,
and the ledger (SQLite) that records every attempt, cooldown and recovery."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from typing import Any, AsyncIterator, Iterator

import pytest

from moneta.application.attempts import MAX_ATTEMPTS
from moneta.bootstrap import Container, build
from moneta.application.gateway import Caller
from moneta.domain.deployment_health import health_id
from moneta.domain.errors import GatewayError
from moneta.infrastructure.config_loader import parse_config
from moneta.infrastructure.http_session import close_session
from tests.fake_openai import FakeOpenAI

HELLO = [{"role": "user", "content": "hello there"}]


def mock(group: str, name: str, **params: Any) -> dict[str, Any]:
    info = params.pop("model_info", {})
    return {"model_name": group, "litellm_params": {"model": f"mock/{name}", **params},
            "model_info": {"id": name, **info}}


def upstream(group: str, name: str, fake: FakeOpenAI, **params: Any) -> dict[str, Any]:
    return {"model_name": group, "model_info": {"id": name},
            "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": fake.base_url, "api_key": fake.api_key,
                               **params}}


@contextmanager
def gateway(sqlite_url: str, models: list[dict[str, Any]], **router_settings: Any) -> Iterator[Container]:
    config = parse_config({"model_list": models, "router_settings": router_settings,
                           "general_settings": {"database_url": sqlite_url}}, {})
    container = build(config, {}, migrate=True)
    try:
        yield container
    finally:
        container.close()


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    first, second = FakeOpenAI().start(), FakeOpenAI().start()
    yield first, second
    await close_session()
    first.stop()
    second.stop()


async def chat(container: Container, model: str, messages=HELLO, **body: Any) -> dict[str, Any]:
    return await container.gateway.chat(Caller(), {"model": model, "messages": messages, **body}, uuid.uuid4())


async def failing_chat(container: Container, model: str, **body: Any) -> tuple[GatewayError, list[str]]:
    request_id = uuid.uuid4()
    with pytest.raises(GatewayError) as raised:
        await container.gateway.chat(Caller(), {"model": model, "messages": HELLO, **body}, request_id)
    return raised.value, event_names(container, request_id)


def event_names(container: Container, stream_id: uuid.UUID) -> list[str]:
    return [type(e).__name__ for e in container.event_store.repository.event_store.get(stream_id)]


def attempts_of(container: Container, request_id: uuid.UUID) -> list[Any]:
    events = container.event_store.repository.event_store.get(request_id)
    return [e for e in events if type(e).__name__ == "AttemptFailed"]


# -- cooldowns ---------------------------------------------------------------------------------

async def test_a_failing_deployment_cools_down_traffic_shifts_and_it_returns(sqlite_url, fakes):
    bad, good = fakes
    bad.fail_with = (500, {"message": "upstream exploded", "type": "server_error"})
    models = [upstream("g", "primary", bad, order=1), upstream("g", "backup", good, order=2)]
    with gateway(sqlite_url, models, allowed_fails=1, cooldown_time=0.5) as container:
        for _ in range(2):  # the primary fails twice (more than allowed_fails=1); the backup answers
            await chat(container, "g")
        assert len(bad.requests) == 2
        for _ in range(5):
            await chat(container, "g")
        assert len(bad.requests) == 2 and len(good.requests) == 7  # the primary is skipped while cooling
        assert event_names(container, health_id("primary")) == ["Registered", "CooledDown"]

        bad.fail_with = None
        await asyncio.sleep(0.6)
        await chat(container, "g")
        assert len(bad.requests) == 3  # back in rotation: order 1 is preferred again
        assert event_names(container, health_id("primary")) == ["Registered", "CooledDown", "Recovered"]
        await chat(container, "g")
        assert event_names(container, health_id("primary"))[-1] == "Recovered"  # no event per request


async def test_when_the_whole_group_cools_down_the_caller_gets_429_with_retry_after(sqlite_url):
    models = [mock("g", f"d{i}", mock_failure_rate=1, mock_failure_status=429) for i in (1, 2)]
    with gateway(sqlite_url, models, cooldown_time=30) as container:
        error, events = await failing_chat(container, "g")
        assert error.status_code == 429 and events.count("AttemptFailed") == 2  # each cooled at its first 429

        error, events = await failing_chat(container, "g")
        assert events == ["Denied"]  # nothing reached a provider
        assert error.status_code == 429 and 25 < error.retry_after <= 30
        body = error.to_openai()["error"]
        assert body["type"] == "rate_limit_error" and body["code"] == "model_group_cooling_down"
        assert "model group 'g'" in body["message"] and "Try again in" in body["message"]


async def test_a_group_of_one_is_never_cooled_down(sqlite_url):
    with gateway(sqlite_url, [mock("solo", "only", mock_failure_rate=1, mock_failure_status=429,
                                   mock_retry_after=0)], allowed_fails=0) as container:
        for _ in range(3):
            error, events = await failing_chat(container, "solo")
            assert events == ["Admitted", "AttemptFailed", "Failed"]
        assert container.gateway.router.cooldowns.state().cooling == {}


# -- retries -----------------------------------------------------------------------------------

async def test_attempts_are_bounded_however_many_retries_and_fallbacks(sqlite_url):
    models = [mock("g", "g1", mock_failure_rate=1, mock_failure_status=503, mock_retry_after=0),
              mock("h", "h1", mock_failure_rate=1, mock_failure_status=503, mock_retry_after=0)]
    with gateway(sqlite_url, models, num_retries=1000, fallbacks=[{"g": ["h"]}]) as container:
        error, events = await failing_chat(container, "g")
        assert error.status_code == 503 and events.count("AttemptFailed") == MAX_ATTEMPTS


async def test_retry_policy_by_error_type(sqlite_url):
    models = [mock("five", "e500", mock_failure_rate=1, mock_failure_status=500, mock_retry_after=0),
              mock("limited", "e429", mock_failure_rate=1, mock_failure_status=429, mock_retry_after=0)]
    policy = {"InternalServerErrorRetries": 2, "RateLimitErrorRetries": 0}
    with gateway(sqlite_url, models, num_retries=5, retry_policy=policy) as container:
        _, events = await failing_chat(container, "five")
        assert events.count("AttemptFailed") == 3
        _, events = await failing_chat(container, "limited")
        assert events.count("AttemptFailed") == 1


async def test_retry_after_is_respected_and_a_long_one_is_not_waited_for(sqlite_url):
    models = [mock("brief", "b", mock_failure_rate=1, mock_failure_status=429, mock_retry_after=0.01),
              mock("long", "l", mock_failure_rate=1, mock_failure_status=429, mock_retry_after=30)]
    with gateway(sqlite_url, models, num_retries=3) as container:
        _, events = await failing_chat(container, "brief")
        assert events.count("AttemptFailed") == 4
        error, events = await failing_chat(container, "long")
        assert events.count("AttemptFailed") == 1 and error.retry_after == 30


async def test_a_retry_goes_at_once_to_another_healthy_deployment(sqlite_url):
    models = [mock("g", "broken", order=1, mock_failure_rate=1, mock_failure_status=503, mock_retry_after=30),
              mock("g", "fine", order=2)]
    with gateway(sqlite_url, models, num_retries=0) as container:
        response = await chat(container, "g")
        assert response["model"] == "fine"  # Retry-After 30 applies to the broken one only


async def test_deployment_timeouts_bound_each_attempt(sqlite_url):
    models = [mock("g", "slow", order=1, mock_latency_ms=5000, timeout=0.05, stream_timeout=0.05),
              mock("g", "quick", order=2)]
    with gateway(sqlite_url, models) as container:
        request_id = uuid.uuid4()
        response = await container.gateway.chat(Caller(), {"model": "g", "messages": HELLO}, request_id)
        assert response["model"] == "quick"
        (failure,) = attempts_of(container, request_id)
        assert failure.deployment_id == "slow" and failure.status_code == 408

        stream = await container.gateway.open_chat_stream(Caller(), {"model": "g", "messages": HELLO, "stream": True},
                                                          uuid.uuid4())
        assert [c async for c in stream][0]["model"] == "quick"


# -- fallbacks ---------------------------------------------------------------------------------

async def test_fallback_chain_in_order(sqlite_url):
    models = [mock("g1", "a", mock_failure_rate=1), mock("g2", "b", mock_failure_rate=1), mock("g3", "c"),
              mock("g4", "d", mock_failure_rate=1)]
    with gateway(sqlite_url, models, fallbacks=[{"g1": ["g2", "g3"]}], default_fallbacks=["g3"]) as container:
        request_id = uuid.uuid4()
        response = await container.gateway.chat(Caller(), {"model": "g1", "messages": HELLO}, request_id)
        assert response["model"] == "c"
        assert [f.deployment_id for f in attempts_of(container, request_id)] == ["a", "b"]
        assert (await chat(container, "g4"))["model"] == "c"  # default_fallbacks


async def test_a_bad_request_is_not_sent_to_the_fallbacks(sqlite_url):
    models = [mock("g1", "a", mock_failure_rate=1, mock_failure_status=400), mock("g2", "b")]
    with gateway(sqlite_url, models, fallbacks=[{"g1": ["g2"]}], num_retries=3) as container:
        error, events = await failing_chat(container, "g1")
        assert error.status_code == 400 and events.count("AttemptFailed") == 1


async def test_content_policy_fallbacks(sqlite_url, fakes):
    strict, _ = fakes
    strict.fail_with = (400, {"message": "flagged", "type": "invalid_request_error", "code": "content_policy_violation"})
    models = [upstream("guarded", "strict", strict), mock("lenient", "lenient")]
    with gateway(sqlite_url, models, content_policy_fallbacks=[{"guarded": ["lenient"]}]) as container:
        assert (await chat(container, "guarded"))["model"] == "lenient"


async def test_pre_call_checks_skip_deployments_whose_context_window_is_too_small(sqlite_url):
    long_prompt = [{"role": "user", "content": "word " * 60}]
    models = [mock("mixed", "tiny", order=1, model_info={"max_input_tokens": 20}), mock("mixed", "roomy", order=2),
              mock("small", "small", model_info={"max_input_tokens": 20}), mock("big", "big")]
    with gateway(sqlite_url, models, enable_pre_call_checks=True,
                 context_window_fallbacks=[{"small": ["big"]}]) as container:
        assert (await chat(container, "mixed"))["model"] == "tiny"
        assert (await chat(container, "mixed", messages=long_prompt))["model"] == "roomy"
        assert (await chat(container, "small"))["model"] == "small"
        request_id = uuid.uuid4()
        response = await container.gateway.chat(Caller(), {"model": "small", "messages": long_prompt}, request_id)
        assert response["model"] == "big" and attempts_of(container, request_id) == []


# -- strategies through the gateway ------------------------------------------------------------

async def test_latency_based_routing_prefers_the_faster_deployment(sqlite_url):
    models = [mock("g", "fast", mock_latency_ms=1), mock("g", "slow", mock_latency_ms=80)]
    with gateway(sqlite_url, models, routing_strategy="latency-based-routing") as container:
        first_two = {(await chat(container, "g"))["model"] for _ in range(2)}
        assert first_two == {"fast", "slow"}  # each measured once
        served = Counter([(await chat(container, "g"))["model"] for _ in range(10)])
        assert served == {"fast": 10}


async def test_least_busy_spreads_concurrent_calls(sqlite_url):
    models = [mock("g", "a", mock_latency_ms=50), mock("g", "b", mock_latency_ms=50)]
    with gateway(sqlite_url, models, routing_strategy="least-busy") as container:
        responses = await asyncio.gather(*(chat(container, "g") for _ in range(4)))
        assert Counter(r["model"] for r in responses) == {"a": 2, "b": 2}


async def test_usage_based_routing_respects_rpm_headroom(sqlite_url):
    models = [mock("g", "a", rpm=1), mock("g", "b", rpm=1)]
    with gateway(sqlite_url, models, routing_strategy="usage-based-routing-v2") as container:
        if int(time.time()) % 60 > 55:  # keep the three calls inside one minute
            await asyncio.sleep(6)
        assert {(await chat(container, "g"))["model"] for _ in range(2)} == {"a", "b"}
        error, events = await failing_chat(container, "g")
        assert error.status_code == 429 and "tpm/rpm limit" in error.message and events == ["Denied"]


async def test_an_rpm_limit_is_shared_by_gateways_on_one_redis_under_any_strategy(tmp_path, redis_url):
    models = [mock("g", "capped", rpm=2, order=1), mock("g", "spare", order=2), mock("solo", "alone", rpm=1)]
    other_ledger = f"sqlite:///{tmp_path / 'other.db'}"
    with gateway(f"sqlite:///{tmp_path / 'one.db'}", models, redis_url=redis_url) as first, \
            gateway(other_ledger, models, redis_url=redis_url) as second:
        if int(time.time()) % 60 > 55:  # keep the calls inside one minute
            await asyncio.sleep(6)
        served = [(await chat(worker, "g"))["model"] for worker in (first, second, first, second)]
        assert served == ["capped", "capped", "spare", "spare"]  # apart, each would have sent 2 to capped
        assert (await chat(second, "solo"))["model"] == "alone"
        error, events = await failing_chat(first, "solo")
        assert error.status_code == 429 and "tpm/rpm limit" in error.message and events == ["Denied"]
        assert 0 < error.retry_after <= 60


async def test_cost_based_routing_takes_the_cheapest(sqlite_url):
    models = [mock("g", "pricey", input_cost_per_token=0.00001, output_cost_per_token=0.00003),
              mock("g", "cheap", input_cost_per_token=0.000001, output_cost_per_token=0.000002)]
    with gateway(sqlite_url, models, routing_strategy="cost-based-routing") as container:
        assert {(await chat(container, "g"))["model"] for _ in range(8)} == {"cheap"}


async def test_the_route_and_its_reason_are_recorded_at_admission(sqlite_url):
    models = [mock("g", "a", weight=1), mock("g", "b", weight=0)]
    with gateway(sqlite_url, models) as container:
        request_id = uuid.uuid4()
        await container.gateway.chat(Caller(), {"model": "g", "messages": HELLO}, request_id)
        record = container.event_store.repository.event_store.get(request_id)
        admitted = next(iter(record))
        assert admitted.decision == {"deployment": "a", "reason": "simple-shuffle by weight: 1.0 of 1"}
