"""Provider budgets (`router_settings.provider_budget_config`): a call reserves on the budget of every
provider it may be served by, is routed only to those that can pay, and charges the one that served
it; a provider's spend never passes its budget and survives a restart."""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from moneta.domain.budgets import BudgetLine, Headroom, paying_providers
from moneta.infrastructure.config_loader import ConfigError, parse_config
from tests.fake_openai import FakeOpenAI
from tests.live_server import LiveServer
from tests.test_budgets import ADMIN, MASTER, admin, events

# Every upstream answers 1 prompt and 8 completion tokens: at $1 and $2 per million, 0.000017 USD a
# call, within what a call with max_tokens 8 reserves (its counted input plus 8 output tokens).
USAGE = {"prompt_tokens": 1, "completion_tokens": 8, "total_tokens": 9}
PRICE = {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}
CALL_COST = Decimal("0.000017")
LIMITS = {"openai": "0.00005", "hosted_vllm": "1", "together_ai": "0.000000000001", "deepseek": "0.000000000001",
          "groq": "0.0002", "xai": "0.00005", "fireworks_ai": "1", "openrouter": "1"}
# model group -> (provider/model, order) of its deployments; the test names the upstream (fast or slow)
GROUPS = {
    "route": [("openai/route-a", 1), ("hosted_vllm/route-b", 2)],
    "over": [("together_ai/over-a", None), ("deepseek/over-b", None)],
    "storm": [("groq/storm-a", None)],
    "relay": [("xai/relay-a", 1), ("fireworks_ai/relay-b", 2)],
    "main": [("together_ai/main-a", None)],
    "backup": [("openrouter/backup-b", None)],
}


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def server_config(fast: FakeOpenAI, slow: FakeOpenAI) -> dict[str, Any]:
    deployments = [{"model_name": group, "litellm_params": {
        "model": model, "api_base": (slow if group == "storm" else fast).base_url, "api_key": fast.api_key, **PRICE,
        **({"order": order} if order else {})}} for group, models in GROUPS.items() for model, order in models]
    return {"model_list": deployments, "general_settings": {"master_key": MASTER},
            "router_settings": {"fallbacks": [{"main": ["backup"]}], "provider_budget_config": {
                provider: {"budget_limit": limit, "time_period": "1d" if provider == "together_ai" else "30d"}
                for provider, limit in LIMITS.items()}}}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    fast, slow = FakeOpenAI(usage=USAGE).start(), FakeOpenAI(usage=USAGE, delay_s=0.2).start()
    yield fast, slow
    fast.stop()
    slow.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("provider-budgets")
    url = f"sqlite:///{workdir / 'ledger.db'}"
    with LiveServer(server_config(*upstreams), workdir, env={"DATABASE_URL": url}) as live:
        live.ledger_url = url  # type: ignore[attr-defined]
        yield live


def call(server: LiveServer, model: str) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/chat/completions", json=chat(model), headers=ADMIN, timeout=30)


def served(upstream: FakeOpenAI, model: str) -> int:
    return sum(1 for request in upstream.requests if request.body.get("model") == model)


def provider_budgets(server: LiveServer) -> dict[str, Any]:
    answer = httpx.get(server.base_url + "/provider/budgets", headers=ADMIN, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["providers"]


def settled(server: LiveServer, provider: str) -> dict[str, Any]:
    """The provider's budget once no call holds a reservation on it (and its counters answer)."""
    deadline = time.monotonic() + 10
    while True:
        answer = httpx.get(server.base_url + "/provider/budgets", headers=ADMIN, timeout=30)
        if answer.status_code == 200 and answer.json()["providers"][provider]["reserved_exact"] == "0":
            return answer.json()["providers"][provider]
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.1)


def reserved_by(server: LiveServer, answer: httpx.Response) -> Decimal:
    admitted = events(server.ledger_url, answer.headers["x-request-id"])[0]  # type: ignore[attr-defined]
    return Decimal(admitted.decision["budget"]["reserved"])


# -- the domain ------------------------------------------------------------------------------------

def test_the_providers_kept_are_those_that_pay_else_the_roomiest_that_pays_the_minimum() -> None:
    key = Headroom(BudgetLine("key:k", "lifetime", 1000, None), 0, 900)  # 100 left: the call may hold 100
    full = Headroom(BudgetLine("provider:a", "p", 500, None), 300, 0)  # 200 left
    short = Headroom(BudgetLine("provider:b", "p", 500, None), 450, 0)  # 50 left
    low = Headroom(BudgetLine("provider:c", "p", 500, None), 490, 0)  # 10 left
    assert paying_providers([key, full, short], 300, 20, unbudgeted=False) == (full.line,)
    assert paying_providers([full, short], 300, 20, unbudgeted=True) == ()  # served where no budget is
    assert paying_providers([short, low], 300, 20, unbudgeted=False) == (short.line,)  # made to fit the roomiest
    assert paying_providers([short, low], 300, 60, unbudgeted=False) == ()  # none pays even the minimum
    assert paying_providers([key], 300, 20, unbudgeted=False) == ()


# -- routing -----------------------------------------------------------------------------------------

def test_a_provider_that_cannot_pay_is_skipped_for_another_provider_of_the_group(
        server: LiveServer, upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    fast, _ = upstreams
    answers = [call(server, "route") for _ in range(5)]

    assert [answer.status_code for answer in answers] == [200] * 5
    reservation = reserved_by(server, answers[0])
    on_openai = served(fast, "route-a")  # preferred (order 1) while its budget pays for a whole call
    assert on_openai >= 1 and served(fast, "route-b") == 5 - on_openai
    assert Decimal(LIMITS["openai"]) - on_openai * CALL_COST < reservation  # it could not pay another
    last = events(server.ledger_url, answers[-1].headers["x-request-id"])[0]  # type: ignore[attr-defined]
    (excluded,) = last.decision["budget"]["providers_excluded"]  # with its counters, as they were seen
    assert excluded["scope"] == "provider:openai" and Decimal(excluded["spent"]) == on_openai * CALL_COST
    assert [scope["scope"] for scope in last.decision["budget"]["scopes"]] == ["provider:hosted_vllm"]
    openai, vllm = settled(server, "openai"), settled(server, "hosted_vllm")
    assert Decimal(openai["spend_exact"]) == on_openai * CALL_COST  # each provider pays for what it served
    assert Decimal(vllm["spend_exact"]) == (5 - on_openai) * CALL_COST


def test_a_call_whose_group_has_no_provider_that_can_pay_goes_to_its_fallback(
        server: LiveServer, upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    fast, _ = upstreams
    answer = call(server, "main")

    assert answer.status_code == 200, answer.text
    assert served(fast, "backup-b") == 1 and served(fast, "main-a") == 0
    admitted = events(server.ledger_url, answer.headers["x-request-id"])[0]  # type: ignore[attr-defined]
    (excluded,) = admitted.decision["budget"]["providers_excluded"]
    assert excluded["scope"] == "provider:together_ai" and excluded["limit"] == "0.000000000"


def test_when_no_provider_can_pay_the_call_is_refused_and_recorded_as_denied(server: LiveServer) -> None:
    refused = call(server, "over")

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "budget_exceeded" and error["code"] == "budget_exceeded"
    scope = next(name for name in ("provider:deepseek", "provider:together_ai") if name in error["message"])
    assert "limit 0 USD, spent 0 USD" in error["message"] and "it resets at" in error["message"]
    (denied,) = events(server.ledger_url, refused.headers["x-request-id"])  # type: ignore[attr-defined]
    budget = denied.decision["budget"]
    assert not budget["allowed"] and budget["refused_scope"] == scope
    assert sorted(s["scope"] for s in budget["scopes"]) == ["provider:deepseek", "provider:together_ai"]
    assert all(s["resets_at"] and s["spent"] == "0.000000000" for s in budget["scopes"])


# -- never past the budget -------------------------------------------------------------------------

def test_concurrent_calls_never_spend_past_a_provider_budget(server: LiveServer) -> None:
    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=chat("storm"), headers=ADMIN)
                                          for _ in range(40)))
    answers = asyncio.run(storm())

    statuses = Counter(answer.status_code for answer in answers)
    assert set(statuses) == {200, 429}, statuses
    assert all(a.json()["error"]["type"] == "budget_exceeded" and "provider:groq" in a.json()["error"]["message"]
               for a in answers if a.status_code == 429)
    limit = Decimal(LIMITS["groq"])
    reservation = reserved_by(server, next(a for a in answers if a.status_code == 200))
    assert statuses[200] >= limit // reservation  # the first wave fills what the reservations allow
    assert statuses[200] * CALL_COST <= limit  # exact: what was admitted never passes the budget
    assert Decimal(settled(server, "groq")["spend_exact"]) == statuses[200] * CALL_COST
    logged = httpx.get(server.base_url + "/spend/logs", headers=ADMIN, params={"page_size": 1000}, timeout=30).json()
    deadline = time.monotonic() + 10
    while sum(1 for row in logged if row["custom_llm_provider"] == "groq") < statuses[200] and \
            time.monotonic() < deadline:
        time.sleep(0.2)
        logged = httpx.get(server.base_url + "/spend/logs", headers=ADMIN, params={"page_size": 1000}).json()
    in_ledger = sum(Decimal(row["spend_exact"]) for row in logged if row["custom_llm_provider"] == "groq")
    assert in_ledger == statuses[200] * CALL_COST <= limit


def test_two_servers_on_redis_and_postgres_share_the_provider_budgets(
        postgres_url: str, redis_url: str, tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    _, slow = upstreams
    deployments = [{"model_name": "shared", "litellm_params": {
        "model": model, "api_base": slow.base_url, "api_key": slow.api_key, "order": order, **PRICE}}
        for model, order in (("openai/shared-a", 1), ("hosted_vllm/shared-b", 2))]
    limits = {"openai": Decimal("0.0001"), "hosted_vllm": Decimal("0.0003")}
    settings = {"model_list": deployments, "general_settings": {"master_key": MASTER}, "router_settings": {
        "redis_url": redis_url, "provider_budget_config": {
            provider: {"budget_limit": str(limit), "time_period": "30d"} for provider, limit in limits.items()}}}
    env = {"DATABASE_URL": postgres_url}
    with LiveServer(settings, tmp_path, env=env) as one, LiveServer(settings, tmp_path, env=env) as two:
        async def storm() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as client:
                return await asyncio.gather(*(client.post(
                    (one, two)[n % 2].base_url + "/v1/chat/completions", json=chat("shared"), headers=ADMIN)
                    for n in range(60)))
        statuses = Counter(answer.status_code for answer in asyncio.run(storm()))
        spend = {provider: Decimal(settled(two, provider)["spend_exact"]) for provider in limits}

    assert set(statuses) == {200, 429}, statuses
    assert all(spend[provider] <= limit for provider, limit in limits.items()), spend
    assert spend["openai"] > 0 and spend["hosted_vllm"] > 0  # the first could not pay for them all
    assert sum(spend.values()) == statuses[200] * CALL_COST == (served(slow, "shared-a") + served(slow, "shared-b")) \
        * CALL_COST


def test_provider_spend_survives_a_restart(server: LiveServer, upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    fast, _ = upstreams
    assert all(call(server, "relay").status_code == 200 for _ in range(4))
    on_xai = served(fast, "relay-a")
    before = {provider: settled(server, provider) for provider in ("xai", "fireworks_ai")}
    assert Decimal(before["xai"]["spend_exact"]) == on_xai * CALL_COST
    assert Decimal(before["fireworks_ai"]["spend_exact"]) == (4 - on_xai) * CALL_COST

    server.stop()
    server.start()  # the counters start from the budget view: each provider charged what it served only
    after = provider_budgets(server)
    assert {p: after[p]["spend_exact"] for p in before} == {p: before[p]["spend_exact"] for p in before}
    assert call(server, "relay").status_code == 200 and served(fast, "relay-a") == on_xai  # xai still cannot pay


# -- the route and the config ------------------------------------------------------------------------

def test_provider_budgets_route_shows_each_budget_to_the_admin_only(server: LiveServer) -> None:
    budgets = provider_budgets(server)

    assert sorted(budgets) == sorted(LIMITS)
    together = budgets["together_ai"]
    assert together["budget_limit"] == 1e-12 and Decimal(together["budget_limit_exact"]) == Decimal("0.000000000001")
    assert together["time_period"] == "1d" and together["spend"] == 0 and together["reserved_exact"] == "0"
    midnight = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert datetime.fromisoformat(together["budget_reset_at"]) == midnight
    assert datetime.fromisoformat(together["period_start"]) == midnight - timedelta(days=1)
    key = admin(server.base_url, "/key/generate", {})
    assert httpx.get(server.base_url + "/provider/budgets",
                     headers={"Authorization": f"Bearer {key['key']}"}).status_code == 403


@pytest.mark.parametrize(("entry", "named"), [
    ({"budget_limt": 1, "time_period": "1d"}, "openai: unknown key(s) budget_limt"),
    ({"budget_limit": -1, "time_period": "1d"}, "openai.budget_limit must be an amount"),
    ({"budget_limit": "NaN", "time_period": "1d"}, "openai.budget_limit must be an amount"),
    ({"budget_limit": "ten", "time_period": "1d"}, "openai.budget_limit must be an amount"),
    ({"budget_limit": 1, "time_period": "1y"}, "openai.time_period: a duration is"),
    ({"budget_limit": 1}, "openai.time_period is required"),
    ({"time_period": "1d"}, "openai.budget_limit is required"),
    (100, "openai must be a mapping"),
])
def test_a_bad_provider_budget_stops_the_config_naming_the_field(entry: Any, named: str) -> None:
    with pytest.raises(ConfigError, match="router_settings.provider_budget_config.") as error:
        parse_config({"router_settings": {"provider_budget_config": {"openai": entry}}}, {})
    assert named in str(error.value)


def test_provider_budgets_are_read_and_acted_on() -> None:
    config = parse_config({"router_settings": {"provider_budget_config": {
        "OpenAI": {"budget_limit": 0.000000000001, "time_period": "1d"},
        "anthropic": {"budget_limit": "100", "time_period": "7d"}}}}, {})

    assert [(b.provider, b.budget_limit, b.time_period) for b in config.budgets.providers] == [
        ("openai", Decimal("1E-12"), "1d"), ("anthropic", Decimal(100), "7d")]
    assert not any("provider_budget_config" in notice for notice in config.notices)
    with pytest.raises(ConfigError, match="must map provider names"):
        parse_config({"router_settings": {"provider_budget_config": ["openai"]}}, {})
