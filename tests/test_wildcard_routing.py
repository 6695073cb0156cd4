"""LiteLLM's wildcard routing over a real server: a `model_list` entry named `openai/*` (or `*`)
serves any model that matches it, with the entry's credentials, priced per concrete model."""
from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import genai_prices
import httpx
import openai
import pytest

from moneta.api.config_check import served
from moneta.application.config import Deployment
from moneta.application.routing.wildcards import MADE_GROUPS, WildcardGroups
from moneta.domain import model_patterns
from moneta.infrastructure.config_loader import ConfigError, parse_config
from moneta.infrastructure.pricing import PriceTable
from tests.edge_server import MASTER_KEY as MASTER
from tests.edge_server import spend_log_rows
from tests.fake_openai import FakeOpenAI
from tests.live_server import LiveServer

ADMIN = {"Authorization": f"Bearer {MASTER}"}
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    """The `openai/*` entry's upstream, and the `*` entry's (another key)."""
    pattern, catch_all = FakeOpenAI(api_key="sk-openai-star").start(), FakeOpenAI(api_key="sk-catch-all").start()
    yield pattern, catch_all
    pattern.stop()
    catch_all.stop()


@pytest.fixture(scope="module")
def server(upstreams: tuple[FakeOpenAI, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    pattern, catch_all = upstreams
    config = {
        "model_list": [
            {"model_name": "*", "litellm_params": {"model": "*", "api_key": catch_all.api_key,
                                                   "api_base": catch_all.base_url}},
            {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_key": pattern.api_key,
                                                          "api_base": pattern.base_url}},
            {"model_name": "openai/gpt-4o", "litellm_params": {"model": "openai/gpt-4o-2024-08-06",
                                                               "api_key": pattern.api_key,
                                                               "api_base": pattern.base_url}},
            {"model_name": "demo", "litellm_params": {"model": "mock/demo"}},
        ],
        "general_settings": {"master_key": MASTER},
    }
    with LiveServer(config, tmp_path_factory.mktemp("wildcard")) as live:
        yield live


def client(server: LiveServer, key: str = MASTER) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)


def chat(server: LiveServer, model: str, key: str = MASTER) -> Any:
    """The raw response, for its x-request-id."""
    return client(server, key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}])


def genai_cost(provider: str, model: str) -> Decimal:
    usage = genai_prices.Usage(input_tokens=USAGE["prompt_tokens"], output_tokens=USAGE["completion_tokens"])
    return genai_prices.calc_price(usage, model, provider_id=provider).total_price


def spend_row(server: LiveServer, raw: Any) -> dict[str, Any]:
    (row,) = spend_log_rows(server, raw.headers["x-request-id"])
    return row


def test_a_call_through_openai_star_reaches_openai_with_the_concrete_model_and_is_priced_as_it(
        server: LiveServer, upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    pattern, catch_all = upstreams
    before = len(catch_all.requests)

    raw = chat(server, "openai/gpt-4.1-mini")

    assert raw.parse().choices[0].message.content == pattern.reply
    sent = pattern.requests[-1]
    assert sent.body["model"] == "gpt-4.1-mini"
    assert sent.headers["Authorization"] == "Bearer sk-openai-star"
    assert len(catch_all.requests) == before  # the more specific pattern served it, not `*`
    row = spend_row(server, raw)
    assert Decimal(row["spend_exact"]) == genai_cost("openai", "gpt-4.1-mini")
    assert row["model_group"] == "openai/gpt-4.1-mini"
    assert row["model_id"].endswith(":openai/gpt-4.1-mini")  # a deployment of its own


def test_an_explicit_model_group_wins_over_a_pattern(server: LiveServer,
                                                    upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    chat(server, "openai/gpt-4o")
    assert upstreams[0].requests[-1].body["model"] == "gpt-4o-2024-08-06"


def test_star_catches_any_other_provider_model(server: LiveServer, upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    raw = chat(server, "deepseek/deepseek-chat")

    sent = upstreams[1].requests[-1]
    assert sent.body["model"] == "deepseek-chat" and sent.headers["Authorization"] == "Bearer sk-catch-all"
    assert Decimal(spend_row(server, raw)["spend_exact"]) == genai_cost("deepseek", "deepseek-chat")


@pytest.mark.parametrize("model", ["openai/gpt-nonexistent-9", "nonsense-model"])
def test_a_concrete_model_with_no_price_is_refused_naming_it(server: LiveServer, model: str,
                                                            upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    sent = [len(upstream.requests) for upstream in upstreams]
    with pytest.raises(openai.BadRequestError) as refused:
        chat(server, model)
    assert refused.value.code == "model_not_priced"
    assert model.rpartition("/")[2] in refused.value.message
    assert [len(upstream.requests) for upstream in upstreams] == sent


def test_models_lists_the_patterns_priced_models_not_the_patterns(server: LiveServer) -> None:
    ids = [model.id for model in client(server).models.list()]

    assert {"openai/gpt-4.1-mini", "openai/gpt-4o-mini", "openai/gpt-4o", "demo"} <= set(ids)
    assert not [name for name in ids if "*" in name]
    assert len(ids) == len(set(ids))


def test_a_key_limited_to_openai_star_calls_openai_models_only(server: LiveServer) -> None:
    made = httpx.post(server.base_url + "/key/generate", headers=ADMIN, json={"models": ["openai/*"]}, timeout=30)
    assert made.status_code == 200, made.text
    key = made.json()["key"]

    assert chat(server, "openai/gpt-4o-mini", key).parse().choices[0].message.content
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(server, "anthropic/claude-haiku-4-5", key)
    assert refused.value.code == "key_model_access_denied"
    listed = [model.id for model in client(server, key).models.list()]
    assert "openai/gpt-4.1-mini" in listed and "demo" not in listed
    assert all(name.startswith("openai/") for name in listed)


# -- the parts, without a server ---------------------------------------------------------------

def test_patterns_match_fill_and_rank_as_litellm_does() -> None:
    assert model_patterns.match("openai/*", "openai/gpt-4o") == ("gpt-4o",)
    assert model_patterns.match("openai/*", "anthropic/claude") is None
    assert model_patterns.match("*", "a/b/c") == ("a/b/c",)
    assert model_patterns.fill("bedrock/*", ("us.claude",)) == "bedrock/us.claude"
    assert model_patterns.match("a.b/*", "axb/c") is None  # only `*` is special
    ranked = sorted(["*", "openai/*", "openai/gpt-4*"], key=model_patterns.specificity, reverse=True)
    assert ranked == ["openai/gpt-4*", "openai/*", "*"]


def test_the_most_specific_pattern_serves_and_made_groups_are_bounded() -> None:
    entries = [_entry("*", "*"), _entry("openai/gpt-4*", "azure/gpt-4*"), _entry("openai/*", "openai/*")]
    groups = WildcardGroups(entries)

    (served,) = groups.group("openai/gpt-4o") or []
    assert (served.provider, served.provider_model, served.id) == ("azure", "gpt-4o", "openai/gpt-4*:azure/gpt-4o")
    for n in range(MADE_GROUPS + 10):
        groups.group(f"openai/o{n}")
    assert len(groups.made()) == MADE_GROUPS
    assert groups.group("openai/o1")[0].id == "openai/*:openai/o1"  # made again, with the same id


def test_a_pattern_entry_whose_model_has_more_stars_than_its_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model_list\[0\].litellm_params.model: 'openai/\*/\*' has more"):
        parse_config({"model_list": [{"model_name": "x/*", "litellm_params": {"model": "openai/*/*"}}]}, {})
    with pytest.raises(ConfigError, match="more '\\*' than its model_name 'gpt'"):
        parse_config({"model_list": [{"model_name": "gpt", "litellm_params": {"model": "openai/*"}}]}, {})


def _entry(name: str, template: str) -> Deployment:
    return Deployment(id=name, model_name=name, provider="", provider_model="", model_template=template)


def test_config_check_shows_a_pattern_entry_priced_per_model() -> None:
    config = parse_config({"model_list": [{"model_name": "openai/*", "litellm_params": {"model": "openai/*"}}]}, {})
    (_, line) = served(config, PriceTable())
    assert line.endswith("openai/*  priced as each model it serves, when called")
