"""A LiteLLM user's whole config, as it would arrive: it starts, it says once what it will not do,
and what it does works through the official SDK (wildcards, caching, base_model pricing,
budgets, keys), its refusals caught as the `openai` SDK's errors."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.fake_openai import FakeOpenAI
from tests.live_server import LiveServer

MASTER = "sk-litellm-user-master-01"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(api_key="sk-upstream-openai-01").start()
    yield fake
    fake.stop()


def litellm_config(upstream: FakeOpenAI) -> dict:
    return {
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {
                "model": "azure/gpt-4o-prod", "api_base": upstream.base_url.removesuffix("/v1"),
                "api_key": "os.environ/AZURE_KEY", "api_version": "2024-10-21"},
             "model_info": {"base_model": "azure/gpt-4o"}},
            {"model_name": "openai/*", "litellm_params": {
                "model": "openai/*", "api_base": upstream.base_url, "api_key": "os.environ/OPENAI_KEY"}},
            {"model_name": "demo", "litellm_params": {"model": "mock/demo"}},
        ],
        "litellm_settings": {
            "drop_params": True, "num_retries": 1, "request_timeout": 30,
            "cache": True, "cache_params": {"type": "local", "ttl": 60, "namespace": "litellm"},
            "success_callback": ["langfuse"], "max_budget": 100, "budget_duration": "30d",
        },
        "general_settings": {
            "master_key": "os.environ/LITELLM_MASTER_KEY", "alerting": ["slack"], "store_model_in_db": True,
            "pass_through_endpoints": [{"path": "/langfuse", "target": "https://example.com"}],
        },
        "router_settings": {"routing_strategy": "simple-shuffle", "routing_strategy_args": {"ttl": 3},
                            "allowed_fails": 2, "cooldown_time": 30},
    }


@pytest.fixture(scope="module")
def server(upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"LITELLM_MASTER_KEY": MASTER, "OPENAI_KEY": upstream.api_key, "AZURE_KEY": " sk-azure-key-01\n"}
    with LiveServer(litellm_config(upstream), tmp_path_factory.mktemp("litellm-user"), env=env) as live:
        yield live


def test_it_starts_and_says_once_what_it_will_not_do(server: LiveServer) -> None:
    log = server.log()
    (unsupported,) = [line for line in log.splitlines() if "accepted, not supported" in line]
    for key in ("general_settings.alerting[slack]", "general_settings.store_model_in_db",
                "general_settings.pass_through_endpoints", "litellm_settings.success_callback",
                "router_settings.routing_strategy_args.ttl"):
        assert key in unsupported
    for acted_on in ("cache", "max_budget", "budget_duration", "drop_params"):
        assert f"litellm_settings.{acted_on}" not in unsupported
    assert log.count("surrounding whitespace") == 1 and "sk-azure-key-01" not in log
    assert "unpriced" not in log  # the Azure deployment is priced through its base_model


def test_what_it_does_works_through_the_sdk(server: LiveServer, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=MASTER, max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    first = client.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini", messages=messages)
    again = client.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini", messages=messages)
    assert upstream.requests[-1].body["model"] == "gpt-4o-mini" and first.parse().id == again.parse().id
    assert "x-litellm-cache-key" in again.headers  # the second came from the cache
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=messages)


def test_its_keys_and_budgets_work(server: LiveServer) -> None:
    made = httpx.post(server.base_url + "/key/generate", json={"models": ["demo"], "max_budget": 0.00005},
                      headers={"Authorization": f"Bearer {MASTER}"}).json()
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=made["key"], max_retries=0)
    call = {"model": "demo", "max_tokens": 8}
    assert client.chat.completions.create(**call, messages=[{"role": "user", "content": "hi"}]).usage.total_tokens
    with pytest.raises(openai.RateLimitError) as refused:
        for n in range(5):  # each call its own, so that none comes from the cache (which costs nothing)
            client.chat.completions.create(**call, messages=[{"role": "user", "content": f"hi {n}"}])
    assert refused.value.code == "budget_exceeded"
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**{**call, "model": "openai/gpt-4o-mini"}, messages=[{"role": "user",
                                                                                          "content": "hi"}])
    ready = httpx.get(server.base_url + "/health/readiness").json()
    assert ready["budgets"]["when_unverifiable"] == "refuse"

